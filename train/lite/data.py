"""The data of a LITE run: corpus splits (the stdlib with a JDK's sources), packed train chunks (only as
many files as a bounded run reads), held-out chunks per language, batches, and the exit shortlist."""

from __future__ import annotations

import dataclasses
import math

import torch

from greencode.errors import GreencodeError


def _corpus_splits(data_config):
    """(train files, validation files, skipped count); the embedded stdlib corpus also takes a JDK's
    src.zip where one is installed, as `greencode train default` does, so Java is learned and measured."""
    from greencode.data import load_files, split_files
    from train.assets.calibration import jdk_src_zips

    files = load_files(data_config)
    train_files, validation_files, _ = split_files(files, data_config)
    java = jdk_src_zips()[0] if data_config.corpus == "stdlib" and data_config.language == "auto" else None
    if java is not None:
        java_config = dataclasses.replace(data_config, corpus=str(java), language="java")
        java_train, java_validation, _ = split_files(load_files(java_config), java_config)
        train_files, validation_files = train_files + java_train, validation_files + java_validation
    return train_files, validation_files, files.skipped_count


CHARS_PER_TOKEN_BOUND = 8  # code is ~3-4 characters a token: files of 8 chars per token needed are plenty


def _enough_files(files: list, tokens: int, seed: int) -> list:
    """A seeded sample of `files` holding about `tokens` tokens with room to spare, so a bounded run does not
    tokenise a whole corpus (the stdlib and a JDK are ~100 MB of text) before its first step."""
    import random

    order = list(files)
    random.Random(seed).shuffle(order)
    taken, chars = [], 0
    for file in order:
        if chars >= tokens * CHARS_PER_TOKEN_BOUND:
            break
        taken.append(file)
        chars += len(file.text)
    return taken


def prepare_data(config, tokenizer, chunks_per_step: int = 1, max_steps: int = -1):
    """(train chunks Dataset, {language: validation chunks (N, T)}, skipped count) from [data] and [finetune].
    With max_steps > 0 only a seeded sample of the train files big enough for the run is tokenised."""
    from greencode.data import pack, to_dataset

    ft = config.finetune
    seq_len = ft.seq_len
    train_files, validation_files, skipped = _corpus_splits(config.data)
    if not train_files or not validation_files:
        raise GreencodeError(f"data.corpus: {config.data.corpus} gives {len(train_files)} train and "
                             f"{len(validation_files)} validation files; both need at least one "
                             "(use a larger corpus or change data.validation_fraction)")
    needed = max_steps * chunks_per_step * seq_len
    sample = _enough_files(train_files, needed, ft.seed) if max_steps > 0 else train_files
    train = pack(to_dataset(sample), tokenizer, seq_len)
    if len(train) < max_steps * chunks_per_step and len(sample) < len(train_files):  # short after all: use every file
        train = pack(to_dataset(train_files), tokenizer, seq_len)
    languages = sorted({file.language for file in validation_files})
    validation = {}
    for language in languages:  # held-out tokens of each language, measured apart
        wanted = math.ceil(ft.validation_tokens / len(languages) / seq_len)
        files = _enough_files([f for f in validation_files if f.language == language], wanted * seq_len, ft.seed)
        packed = pack(to_dataset(files), tokenizer, seq_len)
        wanted = min(len(packed), wanted)
        if wanted:
            validation[language] = torch.tensor(packed.select(range(wanted))["input_ids"], dtype=torch.long)
    if len(train) == 0 or not validation:
        raise GreencodeError(f"data.corpus: {config.data.corpus} has fewer than finetune.seq_len = {seq_len} "
                             "tokens in its train or validation split; lower seq_len or add files")
    if len(train) < chunks_per_step:
        raise GreencodeError(f"data.corpus: {config.data.corpus} gives {len(train)} train chunks of {seq_len} tokens; "
                             f"one optimiser step needs {chunks_per_step} (batch_size x grad_accum x processes); "
                             "add files or lower finetune.batch_size, grad_accum or seq_len")
    return train, validation, skipped


def collate(rows: list[dict]) -> dict:
    batch = {"input_ids": torch.tensor([row["input_ids"] for row in rows], dtype=torch.long)}
    if "chunk" in rows[0]:  # which cached teacher states belong to these rows
        batch["chunk"] = torch.tensor([row["chunk"] for row in rows], dtype=torch.long)
    return batch


def exit_shortlist(config, loaded) -> torch.Tensor | None:
    """The token ids the exits decode over in the distillation loss and in agreement, as the engine will:
    [exits].shortlist of the model's own shortlist. A model without one (default-base) takes the shipped
    default's when it has the same tokenizer (a shortlist belongs to a tokenizer and a corpus, not weights)."""
    from greencode.decoding.engine import resolve_shortlist
    from greencode.model.load import ASSETS, shipped_adaptation
    from greencode.exits.shortlist import load_shortlist

    own = loaded.info.get("shortlist")
    if own is None and config.exits.shortlist != 0:
        manifest = shipped_adaptation()
        if manifest.get("shortlist"):
            try:
                own = load_shortlist(ASSETS / manifest["shortlist"], loaded.tokenizer)
            except GreencodeError:  # another tokenizer: exits decode over the whole vocabulary
                own = None
    return resolve_shortlist(dataclasses.replace(loaded, info={**loaded.info, "shortlist": own}),
                             config.exits.shortlist)
