import numpy as np

from greencode.data import CodeFile
from greencode.decoding.engine import EarlyExitEngine
from greencode.model.load import ASSETS
from train.agent.batched_trajectories import RawTrajectories, generate_trajectories, to_trajectory_cache
from train.assets.exit_maps import ExitHead


def _files():
    python = [CodeFile(p.name, p.read_text(), "python") for p in sorted(ASSETS.parent.glob("*.py"))[:6]]
    java = [CodeFile(f"N{n}.java", "public class N%d {\n  int twice(int x) { return 2 * x + %d; }\n"
                     "  int thrice(int x) { return 3 * x - %d; }\n}\n" % (n, n, n), "java") for n in range(6)]
    return {"python": python, "java": java}


def test_batched_states_are_what_full_depth_decoding_records(tiny_llama, tmp_path):
    files = _files()
    raw = generate_trajectories(tiny_llama, files, [4, 6, 10], samples_per_language=2, tokens_per_sample=4,
                                max_context=24, batch_size=4, seed=0, log=lambda line: None)
    raw.save(tmp_path / "raw.safetensors", {"seed": 0})
    raw, meta = RawTrajectories.load(tmp_path / "raw.safetensors")
    assert meta == {"seed": 0} and sorted({s["language"] for s in raw.sources}) == ["java", "python"]
    cache = to_trajectory_cache(raw, tiny_llama, None, ExitHead(tiny_llama.adapter))
    engine = EarlyExitEngine(tiny_llama, exit_points=[4, 6, 10])
    by_path = {f.path: f for group in files.values() for f in group}
    for index, source in enumerate(raw.sources):
        ids = tiny_llama.tokenizer(by_path[source["file"]].text, add_special_tokens=False)["input_ids"]
        start, stop = source["context"]
        events = engine.complete(ids[start:stop], max_new_tokens=4, record=True).events
        rows = np.flatnonzero(cache.sample == index)
        assert [e.trace.final_top1 for e in events] == cache.final_top1[rows].tolist()
        recorded = np.stack([e.trace.observations for e in events])
        assert np.allclose(recorded, cache.observations[rows], atol=3e-2)  # float16 states
        assert (np.asarray([e.trace.exit_top1 for e in events]) == cache.exit_top1[rows]).mean() >= 0.9
