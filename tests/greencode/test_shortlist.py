import pytest
import torch

from greencode.errors import GreencodeError
from greencode.shortlist import (ShortlistHead, check_shortlist, load_shortlist, most_frequent, save_shortlist,
                                 tokenizer_fingerprint)


def counts_from_code(tokenizer, text: str) -> torch.Tensor:
    """Token counts of some code, the way a shortlist is built from a corpus."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    return torch.bincount(ids, minlength=len(tokenizer))


CODE = "def f(x):\n    return x + 1\n\nfor i in range(10):\n    print(f(i))\n" * 3


def test_most_frequent_orders_by_count_and_drops_unseen():
    counts = torch.tensor([0, 5, 2, 5, 0, 9])
    assert most_frequent(counts, 10).tolist() == [5, 1, 3, 2]
    assert most_frequent(counts, 2).tolist() == [5, 1]


def test_round_trip_keeps_order(tmp_path, tiny_llama):
    tokenizer = tiny_llama.tokenizer
    ids = most_frequent(counts_from_code(tokenizer, CODE), 20)
    path = save_shortlist(tmp_path / "shortlist.safetensors", ids, tokenizer, source="test")
    assert torch.equal(load_shortlist(path, tokenizer), ids)
    assert not list(tmp_path.glob(".*partial*"))


def _write_raw(path, ids, metadata):
    from safetensors.torch import save_file

    save_file({"ids": torch.as_tensor(ids, dtype=torch.int64)}, str(path), metadata=metadata)
    return path


def _metadata(tokenizer):
    return {"format": "greencode-shortlist/1", "vocab_size": str(len(tokenizer)),
            "tokenizer": tokenizer_fingerprint(tokenizer), "source": "test"}


@pytest.mark.parametrize("ids, message", [
    ([], "empty"),
    ([1, 2, 10**7], "outside the vocabulary"),
    ([-1, 2], "outside the vocabulary"),
    ([5, 6, 5], "repeats"),
])
def test_bad_shortlists_are_refused_naming_the_file(tmp_path, tiny_llama, ids, message):
    path = _write_raw(tmp_path / "bad.safetensors", ids, _metadata(tiny_llama.tokenizer))
    with pytest.raises(GreencodeError, match=message) as info:
        load_shortlist(path, tiny_llama.tokenizer)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_shortlist_of_another_tokenizer_is_refused(tmp_path, tiny_llama):
    metadata = _metadata(tiny_llama.tokenizer) | {"tokenizer": "0" * 64}
    path = _write_raw(tmp_path / "other.safetensors", [1, 2, 3], metadata)
    with pytest.raises(GreencodeError, match="another tokenizer"):
        load_shortlist(path, tiny_llama.tokenizer)


def test_not_a_shortlist_is_refused(tmp_path, tiny_llama):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(GreencodeError, match="junk.safetensors"):
        load_shortlist(path, tiny_llama.tokenizer)


def test_save_refuses_a_bad_shortlist_and_writes_nothing(tmp_path, tiny_llama):
    with pytest.raises(GreencodeError, match="empty"):
        save_shortlist(tmp_path / "s.safetensors", torch.tensor([], dtype=torch.int64), tiny_llama.tokenizer)
    assert not list(tmp_path.iterdir())


def test_check_shortlist_refuses_floats():
    with pytest.raises(GreencodeError, match="1-D tensor of token ids"):
        check_shortlist(torch.tensor([1.0, 2.0]), 10, "x")


def test_head_gives_the_shortlist_rows_of_the_full_head(tiny_model):
    adapter = tiny_model.adapter
    lm_head = adapter.model.get_output_embeddings()
    ids = torch.tensor([7, 3, 100, 42])
    head = ShortlistHead(lm_head, ids, lm_head.weight.shape[0])
    normed = torch.randn(1, 1, adapter.hidden_size)
    assert head.weight.is_contiguous() and head.weight.shape == (4, lm_head.weight.shape[1])
    assert torch.allclose(head(normed), lm_head(normed)[..., ids], atol=1e-5)
    assert head.token(2) == 100
