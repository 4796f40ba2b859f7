"""The recipe behind the shipped segment localizer (src/voxguard/model/weights/localizer.pt).

    python scripts/localizer_recipe.py --shared ../shared --out build/localizer

Synthesises the voices (every engine of ``voxguard corpus`` on its train sentences, plus WORLD,
Griffin-Lim and LPC copies of real speech) and cuts ``--examples`` spliced recordings from them and from
real speech: the corpus's train LibriSpeech speakers (never the speakers or sentences
``scripts/edge_study.py`` measures with; a tenth of the speakers only make the dev examples) and its train
Asterisk voices (training only). Then trains each member of the ensemble
(``voxguard.training.localizer.MEMBERS``: a :class:`voxguard.model.localizer.LocNet` on its own draw of
examples), picks the segment placement (``voxguard.edges.Placement``) for their average on the dev
examples, and writes ``localizer.pt`` and ``report.json`` (dev frame accuracy along the way, the
placements tried, sha256, sizes, seconds). About 30 minutes on a 2-core CPU. To ship: copy
``localizer.pt`` into ``src/voxguard/model/weights/`` and its sha256 into ``WEIGHTS_SHA256`` in
``src/voxguard/model/localizer.py``. ``--tiny`` makes a few seconds of everything, for the test that
runs the recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from voxguard.model.localizer import LocEnsemble
from voxguard.training import localizer as recipe

sys.path.insert(0, str(Path(__file__).parent))
import edge_study

logger = logging.getLogger("localizer_recipe")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=2400)
    parser.add_argument("--dev-examples", type=int, default=300)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a few clips and steps: the recipe's own test")
    args = parser.parse_args()
    started = time.monotonic()
    torch.set_num_threads(args.workers)
    librispeech = args.shared / "corpus" / "librispeech-train-clean-100"
    held_out = edge_study.librispeech_speakers(args.shared / "samples", librispeech)
    sizes = recipe.TINY if args.tiny else recipe.PoolSizes()
    sentences = set(edge_study.vs.SENTENCES)
    pools = recipe.build_pools(librispeech, held_out, sentences, sizes, args.seed, args.workers)
    order = np.random.default_rng(args.seed).permutation(len(pools.real))
    dev_count = max(1, len(order) // 10)
    dev_pools = replace(pools, real=[pools.real[i] for i in order[:dev_count]])
    # every fourth of ~250: real speech unlike LibriSpeech, without outnumbering its speakers
    asterisk = [] if args.tiny else recipe.asterisk_recordings()[::4]
    train_pools = replace(pools, real=[pools.real[i] for i in order[dev_count:]] + asterisk)
    dev = recipe.examples(dev_pools, args.dev_examples, args.seed + 1, args.workers, recipe.DEV_MIXED_SHARE)
    members, histories = [], []
    for member in recipe.MEMBERS:
        train = recipe.examples(train_pools, args.examples, member.seed, args.workers, member.mixed_share)
        logger.info(
            "member %s: %d train examples (%.0f s so far)", member, len(train), time.monotonic() - started
        )
        options = recipe.FitOptions(steps=args.steps, seed=member.seed)
        net, history = recipe.fit(train, dev, options, log_every=max(1, min(250, args.steps)))
        members.append(net)
        histories.append({**asdict(member), "fit": asdict(options), "history": history})
    ensemble = LocEnsemble(members).eval()
    accuracy = recipe.frame_accuracy(ensemble, dev)
    logger.info("ensemble: dev frame accuracy %.4f", accuracy)
    placement, placements = recipe.choose_placement(ensemble, dev)
    weights = args.out / "localizer.pt"
    provenance = {
        "recipe": "scripts/localizer_recipe.py",
        "seed": args.seed,
        "examples": args.examples,
        "dev_examples": args.dev_examples,
        "held_out_speakers": sorted(held_out),
        "held_out_sentences": sorted(sentences),
        "dev_mixed_share": recipe.DEV_MIXED_SHARE,
        "pools": {
            "real_train": len(train_pools.real),
            "asterisk": len(asterisk),
            "real_dev": len(dev_pools.real),
        }
        | {voice: len(clips) for voice, clips in sorted(pools.synthetic.items())},
        "members": histories,
    }
    recipe.save(ensemble, placement, weights, provenance)
    report = {
        **provenance,
        "dev_frame_accuracy": accuracy,
        "placement": placement.__dict__,
        "placements": placements,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "bytes": weights.stat().st_size,
        "seconds": round(time.monotonic() - started),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s (sha256 %s) in %d s", weights, report["sha256"], report["seconds"])


if __name__ == "__main__":
    main()
