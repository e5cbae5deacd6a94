"""Held-out agreement per exit point of several exit-map files, on the same tokens.

    python -m train.experiments.compare_maps RUN OLD_MAPS

RUN is a `greencode train default --output` folder (its validation state parts and shortlist, and its
exit_maps.safetensors as "new"); OLD_MAPS an earlier maps file ("previous"). Prints, per language and exit
point, the share of the validation split's teacher-forced tokens whose shortlist top-1 at the exit equals
the final layer's top-1, for no map ("identity"), OLD_MAPS and RUN's maps; writes RUN/compare_maps.json.
"""
import glob
import json
import sys

from greencode.exits.maps import ExitMaps
from greencode.exits.shortlist import load_shortlist
from greencode.model.load import load_model
from train.assets.calibration import assemble
from train.assets.exit_maps import ExitHead, agreement_table


def main():
    run, old_maps = sys.argv[1], sys.argv[2]
    loaded = load_model("default-base", device="cpu", adaptation=False)
    shortlist = load_shortlist(f"{run}/shortlist.safetensors", loaded.tokenizer)
    heads = {"shortlist": ExitHead(loaded.adapter, shortlist)}
    validation = assemble(sorted(glob.glob(f"{run}/states-validation.part*.safetensors")))
    out = {}
    for name, path in (("identity", None), ("previous", old_maps), ("new", f"{run}/exit_maps.safetensors")):
        maps = ExitMaps.load(path, loaded.hidden_size) if path else None
        out[name] = agreement_table(loaded.adapter, validation, maps, heads)
        print(name, json.dumps({lang: table["shortlist"] for lang, table in out[name].items()}), flush=True)
    with open(f"{run}/compare_maps.json", "w") as handle:
        json.dump(out, handle, indent=1)


if __name__ == "__main__":
    main()
