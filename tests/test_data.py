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
    _images, labels, masks = with_masks.load([4, 0])
    assert labels.tolist() == [2, 2] and masks.dtype == torch.bool and masks.shape == (2, 8, 8)



class _FailsOnTwo(ListDataset):
    def __getitem__(self, i):
        if i == 2:
            raise OSError("truncated file")
        return super().__getitem__(i)


def test_items_and_collate_fn_read_the_dataset_as_the_engines_do():
    import pickle

    from auditor.data import SkippedImage

    source = ImageSource(_FailsOnTwo([(torch.full((3, 4, 4), float(i)), i % 2) for i in range(4)]))
    assert isinstance(source.items[2], SkippedImage) and "truncated" in source.items[2].reason
    image, label, mask, index = source.items[3]
    assert torch.equal(image, torch.full((3, 4, 4), 3.0)) and label == 1 and mask is None and index == 3
    items, collate = pickle.loads(pickle.dumps((source.items, source.collate_fn)))  # what a Ray task receives
    images, labels, masks, kept, skipped = collate([items[i] for i in range(4)])
    assert images.shape == (3, 3, 4, 4) and labels.tolist() == [0, 1, 1] and masks is None
    assert kept.tolist() == [0, 1, 3] and [s.index for s in skipped] == [2]

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


# ----------------------------------------------------------------- unreadable images and mixed sizes


def _folder(tmp_path, n=6, size=8, names=("a", "b")):
    from auditor.adapters.data import write_image_folder

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return write_image_folder(images, np.arange(n) % len(names), list(names), tmp_path / "data")


def test_corrupt_and_zero_byte_files_are_skipped_with_index_and_path(tmp_path, caplog):
    from auditor.adapters.data import load_dataset

    root = _folder(tmp_path)
    (root / "a" / "zzz_corrupt.png").write_bytes(b"this is not a png")
    (root / "b" / "zzz_empty.png").write_bytes(b"")
    dataset, _ = load_dataset(str(root))
    source = ImageSource(dataset, batch_size=3)
    seen = np.concatenate([b[0] for b in source.batches()])
    skipped = {s.path.rsplit("/", 1)[-1]: s for s in source.skipped}
    assert set(skipped) == {"zzz_corrupt.png", "zzz_empty.png"}
    assert len(seen) == len(dataset) - 2 and not set(seen) & {s.index for s in source.skipped}
    for s in source.skipped:
        assert dataset.image_path(s.index) == s.path and "UnidentifiedImageError" in s.reason
    assert "zzz_corrupt.png" in caplog.text and "skipping unreadable train image" in caplog.text
    with pytest.raises(InvalidInputError, match=r"zzz_empty\.png.*cannot be read and was skipped"):
        source.load([skipped["zzz_empty.png"].index])


def test_unreadable_items_are_skipped_with_dataloader_workers():
    from auditor.data import SkippedImage

    class Flaky(ListDataset):
        def __getitem__(self, i):
            if i in (1, 4):
                raise OSError(f"truncated file {i}")
            return super().__getitem__(i)

    source = ImageSource(Flaky([(torch.full((3, 4, 4), float(i)), 0) for i in range(6)]), batch_size=4, num_workers=1)
    batches = list(source.batches())
    assert [b[0].tolist() for b in batches] == [[0, 2, 3], [5]]
    assert torch.equal(batches[0][1][:, 0, 0, 0], torch.tensor([0.0, 2.0, 3.0]))
    assert source.skipped == (SkippedImage(1, None, "OSError: truncated file 1"), SkippedImage(4, None, "OSError: truncated file 4"))


def test_unreadable_first_items_do_not_stop_the_source_unless_all_are():
    class FirstBad(ListDataset):
        def __getitem__(self, i):
            if i < self.bad:
                raise ValueError("broken header")
            return super().__getitem__(i)

    ok = FirstBad([(torch.zeros(3, 5, 7), 1)] * 4)
    ok.bad = 2
    source = ImageSource(ok)
    assert source.image_shape == (3, 5, 7) and [s.index for s in source.skipped] == [0, 1]
    broken = FirstBad([(torch.zeros(3, 5, 7), 1)] * 3)
    broken.bad = 3
    with pytest.raises(InvalidInputError, match=r"none of the first 3 train images can be read \(image 0: ValueError: broken header"):
        ImageSource(broken)


def test_mixed_image_sizes_name_the_file_both_sizes_and_image_size(tmp_path):
    from PIL import Image

    from auditor.adapters.data import load_dataset

    root = _folder(tmp_path, size=8)
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(root / "a" / "00002.png")
    dataset, _ = load_dataset(str(root))
    odd = next(i for i in range(len(dataset)) if dataset.image_path(i).endswith("00002.png"))
    with pytest.raises(InvalidInputError) as info:
        list(ImageSource(dataset, batch_size=64).batches())
    message = str(info.value)
    assert f"image {odd} ({str(root / 'a' / '00002.png')!r}) is 3x12x10" in message
    assert "is 3x8x8" in message and "`data.image_size`" in message
    with pytest.raises(InvalidInputError, match="3x12x10"):
        ImageSource(dataset).load([0, odd])


def test_a_size_change_between_batches_is_caught_too():
    items = [(torch.zeros(3, 8, 8), 0)] * 4 + [(torch.zeros(3, 6, 6), 0)] * 4
    with pytest.raises(InvalidInputError, match=r"train image 4 is 3x6x6 \(C x H x W\) but image 0 is 3x8x8"):
        list(ImageSource(ListDataset(items), batch_size=4).batches())


def test_torchvision_imagefolder_paths_are_named(tmp_path):
    import torchvision

    from auditor.data import image_path

    root = _folder(tmp_path, n=4)
    (root / "b" / "zz.png").write_bytes(b"")
    dataset = torchvision.datasets.ImageFolder(str(root), transform=torchvision.transforms.ToTensor())
    source = ImageSource(torch.utils.data.Subset(dataset, list(range(len(dataset)))))
    list(source.batches())
    assert [s.path for s in source.skipped] == [str(root / "b" / "zz.png")]
    assert image_path(dataset, 0) == dataset.samples[0][0] and image_path(ListDataset([]), 0) is None
