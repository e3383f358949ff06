import numpy as np
import pytest
import torch

from auditor.data import ImageSource
from auditor.errors import InvalidInputError


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_tuple_and_dict_items_with_and_without_masks():
    image = torch.rand(3, 8, 8)
    plain = ImageSource(ListDataset([(image, 1)] * 3))
    assert not plain.has_masks and plain.image_shape == (3, 8, 8)
    with_masks = ImageSource(ListDataset([{"image": image, "label": torch.tensor(2), "mask": np.ones((8, 8))}] * 5), batch_size=2)
    assert with_masks.has_masks
    batches = list(with_masks.batches())
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    images, labels, masks = with_masks.load([4, 0])
    assert labels.tolist() == [2, 2] and masks.dtype == torch.bool and masks.shape == (2, 8, 8)


@pytest.mark.parametrize(
    "items, message",
    [
        ([], "is empty"),
        ([(np.zeros((3, 4, 4)), 0)], "expected a torch.Tensor"),
        ([(torch.zeros(4, 4), 0)], r"expected \(C, H, W\)"),
        ([(torch.zeros(3, 8, 8), 0, torch.zeros(4, 4))], "masks must match"),
        ([{"img": torch.zeros(3, 4, 4)}], "expected 'image' and 'label'"),
        (["just a string"], "expected \\(image, label\\)"),
    ],
)
def test_bad_datasets_give_clear_errors(items, message):
    with pytest.raises(InvalidInputError, match=message):
        ImageSource(ListDataset(items))


def test_unit_images_undo_normalisation():
    source = ImageSource(ListDataset([(torch.zeros(3, 2, 2), 0)]), mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    normalised = (torch.full((1, 3, 2, 2), 0.75) - 0.5) / 0.25
    assert torch.allclose(source.unit_images(normalised), torch.full((1, 3, 2, 2), 0.75))
