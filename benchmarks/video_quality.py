"""Video quality against compute for each width schedule: `mgnt evaluate-video` as a script.

    python benchmarks/video_quality.py --pipeline runs/video/mgnt \
        --classifier pipelines/moving-fashion-mnist-frame-classifier --dataset data/moving-fashion-mnist \
        --split test --videos-per-class 10 --rows maskgit default default+cache --context-frames 4 \
        --num-prediction-videos 100 --output-dir video-quality [--i3d-torchscript i3d_torchscript.pt]

Same options as `mgnt evaluate-video --help`; the work is done by `mgnt_hf.evaluation` (importable, see
`mgnt_hf.evaluation.video` for every metric). Writes results.md, results.json and samples/<row>-generation.png,
samples/<row>-prediction.png to --output-dir.
"""

import sys

from mgnt_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate-video", *sys.argv[1:]], prog="video_quality"))
