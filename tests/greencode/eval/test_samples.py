from greencode.data import CodeFile
from greencode.eval.cut import cut_file, make_samples


def test_cut_keeps_the_tokens_nearest_the_cut():
    ids = list(range(1000))
    context, truth = cut_file(ids, 0.6, 512, 15)
    assert context == list(range(88, 600)) and truth == list(range(600, 615))
    assert cut_file(list(range(10)), 0.2, 512, 15) is None  # too short for the ground truth


def test_samples_are_deterministic_and_follow_the_protocol(tiny_llama):
    files = [CodeFile(f"f{i}.py", "value = compute(x)\n" * (40 + i), "python") for i in range(12)]
    first = make_samples(files, tiny_llama.tokenizer, 5, 0.2, 64, 15, seed=1)
    again = make_samples(list(reversed(files)), tiny_llama.tokenizer, 5, 0.2, 64, 15, seed=1)
    assert [s.path for s in first] == [s.path for s in again]  # order of the corpus does not matter
    for sample in first:
        ids = tiny_llama.tokenizer(next(f.text for f in files if f.path == sample.path),
                                   add_special_tokens=False)["input_ids"]
        cut = int(len(ids) * 0.2)
        assert sample.context_ids == ids[max(0, cut - 64):cut] and sample.target_ids == ids[cut:cut + 15]
    other_seed = make_samples(files, tiny_llama.tokenizer, 5, 0.2, 64, 15, seed=2)
    assert [s.path for s in other_seed] != [s.path for s in first]


def test_fraction_range_and_min_context(tiny_llama):
    files = [CodeFile(f"g{i}.py", "x = 1\n" * (2 + 30 * i), "python") for i in range(6)]
    samples = make_samples(files, tiny_llama.tokenizer, 10, max_context=512, target=5, min_context=30,
                           fraction_range=(0.2, 0.6))
    assert samples and all(len(s.context_ids) >= 30 for s in samples)
    assert len(samples) < len(files)  # the short files were passed over
