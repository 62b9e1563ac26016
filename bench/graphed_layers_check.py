"""Train the tiny DeepSeek-V2 MoE of tests/train/test_layer_graphs.py with graphed layers on the GPU, for the given
steps of that test in the given order, and print how many graphs were captured and every warning of the graphed
layers (a capture that failed says which operation broke it). Used by bench/calls/s6_debug.sh and s6_verify.sh.

  python bench/graphed_layers_check.py 0,3,4
"""

import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(order: list[int]) -> None:
    from seektune.training.layer_graphs import graph_layers, graph_stats
    from tests.train import test_layer_graphs as t

    model = t._tiny_moe("cuda", torch.bfloat16)
    graph_layers(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t._train(model, [t.STEPS[i] for i in order], device="cuda")
    said = sorted({str(w.message)[:1500] for w in caught if "graphed" in str(w.message)})
    print(order, graph_stats(model)["captures"], "\n".join(said)[:3000])


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1].split(",")])
