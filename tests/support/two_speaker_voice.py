"""Builds a two-speaker Piper voice from a single-speaker one, for the multi-speaker tests.

usage: two_speaker_voice.py MODEL.onnx OUT.onnx

Piper's multi-speaker models take a fourth input, `sid` ([1] int64), and their config lists
`num_speakers` and `speaker_id_map`. No such voice can be downloaded here, so this derives one
from the real voice: the model gains a `sid` input that picks a row of a table of scale
factors, and the original graph runs with its `scales` multiplied by that row. Speaker
"steady" (0) keeps the voice's own pace; speaker "unhurried" (1) speaks at 1.4x the length
scale (slower), so a test can tell from the audio alone which speaker rendered it.
"""
import json
import sys

import onnx
from onnx import TensorProto, helper, numpy_helper
import numpy

SPEAKERS = {"steady": 0, "unhurried": 1}
# Rows: (noise_scale, length_scale, noise_w) multipliers per speaker id.
SCALE_FACTORS = numpy.array([[1.0, 1.0, 1.0], [1.0, 1.4, 1.0]], dtype=numpy.float32)


def main(model_path, out_path):
    model = onnx.load(model_path)
    graph = model.graph
    if any(i.name == "sid" for i in graph.input):
        sys.exit(f"{model_path} already takes a speaker id")
    # Piper's single-speaker exports name an internal tensor (the phoneme embedding table)
    # "sid"; it is renamed so that the name is free for the new input.
    for tensor in graph.initializer:
        if tensor.name == "sid":
            tensor.name = "phoneme_embedding"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == "sid":
                node.input[k] = "phoneme_embedding"
    # Everything inside that read `scales` now reads the speaker's scaled copy.
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == "scales":
                node.input[k] = "speaker_scales"
    graph.input.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
    graph.initializer.extend([
        numpy_helper.from_array(SCALE_FACTORS, "speaker_scale_table"),
        numpy_helper.from_array(numpy.array([3], dtype=numpy.int64), "speaker_scale_shape"),
    ])
    prologue = [
        helper.make_node("Gather", ["speaker_scale_table", "sid"], ["speaker_row"], axis=0),
        helper.make_node("Reshape", ["speaker_row", "speaker_scale_shape"], ["speaker_factors"]),
        helper.make_node("Mul", ["scales", "speaker_factors"], ["speaker_scales"]),
    ]
    nodes = prologue + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, out_path)

    with open(model_path + ".json") as f:
        config = json.load(f)
    config["num_speakers"] = len(SPEAKERS)
    config["speaker_id_map"] = SPEAKERS
    with open(out_path + ".json", "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
