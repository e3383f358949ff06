"""A tiny transformers CLIP saved to a local folder, for testing the "hf_clip" backend offline.

transformers bundles no CLIP vocabulary, so the tokenizer is built from the BPE file that
ships inside open_clip (the same vocabulary as OpenAI's CLIP).
"""

from __future__ import annotations

from pathlib import Path

import torch

from auditor.errors import MissingDependencyError


def clip_tokenizer_from_open_clip():
    """A ``transformers.CLIPTokenizer`` with the real CLIP vocabulary (49408 tokens), built offline.

    Raises:
        MissingDependencyError: open_clip or transformers missing.
    """
    try:
        from open_clip.tokenizer import SimpleTokenizer
        from transformers import CLIPTokenizer
    except ImportError as error:
        raise MissingDependencyError(f"{error}; install with `pip install open_clip_torch transformers`") from None
    simple = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(token, token): index for token, index in simple.encoder.items()}
    merges = [tuple(pair) for pair in sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)]
    return CLIPTokenizer(vocab=vocab, merges=merges)


def save_tiny_hf_clip(folder: str | Path, image_size: int = 64, seed: int = 0) -> Path:
    """Write a randomly initialised tiny ``CLIPModel`` with its tokenizer and processor to ``folder``.

    Args:
        folder: destination (created).
        image_size: vision input side.
        seed: initialisation seed.

    Returns:
        The folder, loadable with ``CLIPModel.from_pretrained(folder)`` and the "hf_clip" encoder.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = Path(folder)
    tokenizer = clip_tokenizer_from_open_clip()
    config = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=16, vocab_size=49408, bos_token_id=49406, eos_token_id=49407),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=64,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
