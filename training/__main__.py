"""python -m training STEP [options]: finetune | lat | search | quantize | export | distill | pipeline."""
import sys

STEPS = {"finetune": "training.train", "lat": "training.train", "search": "training.search",
         "quantize": "training.quantize", "export": "training.export", "distill": "training.distill",
         "pipeline": "training.pipeline"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in STEPS:
        sys.exit(__doc__)
    step, rest = sys.argv[1], sys.argv[2:]
    if step in ("finetune", "lat"):
        rest = ["--step", step] + rest
    __import__(STEPS[step], fromlist=["main"]).main(rest)


if __name__ == "__main__":
    main()
