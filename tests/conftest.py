"""Shared fixtures: tiny random models (one load per test session) and the real default model."""

from __future__ import annotations

import functools

import pytest

TINY = ("tiny-random-llama", "tiny-random-opt", "tiny-random-gpt2")


@functools.lru_cache(maxsize=None)
def _load(spec: str):
    from greencode.model.load import load_model

    return load_model(spec, device="cpu")


def saved_model(spec: str, directory):
    """A tiny random model written out as an HF model directory (weights, config, tokenizer)."""
    loaded = _load(spec)
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(params=TINY)
def tiny_model(request):
    """Each tiny random architecture in turn (shared and read-only: don't train it in place)."""
    return _load(request.param)


@pytest.fixture
def tiny_llama():
    return _load("tiny-random-llama")


@pytest.fixture
def default_model():
    return _load("default")
