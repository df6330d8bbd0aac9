"""One conversion in a fresh process, as a user runs it: `convert_one.py TOOL MODEL OUTPUT`.

kconvert runs with the product's python (the CLI's conversion path, application.service; `kconvert-cli`
runs the whole CLI, click included); tf2onnx and keras run in bench/.venv.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(tool: str, model: str, output: str) -> None:
    if tool == "kconvert":
        # The CLI's own conversion path (application.service.convert, which reads the model through
        # converter.api and streams the weights into the file), without click's argument parsing.
        from pathlib import Path

        from application.service import ConvertRequest, convert

        convert(ConvertRequest(Path(model), Path(output)))
    elif tool == "kconvert-cli":
        from application.cli import main as cli

        sys.argv = ["kconvert", "convert", model, "-o", output]
        cli()
    elif tool == "tf2onnx":
        from tf2onnx.convert import main as t2o

        sys.argv = ["tf2onnx.convert", "--keras", model, "--output", output, "--opset", "17"]
        t2o()
    elif tool == "keras":
        import keras
        import numpy as np

        loaded = keras.saving.load_model(model)
        dummy = [np.zeros((1, *t.shape[1:]), dtype=t.dtype) for t in loaded.inputs]
        loaded(dummy if len(dummy) > 1 else dummy[0])  # export refuses a model that was never called
        loaded.export(output, format="onnx", verbose=False)
    else:
        raise SystemExit(f"unknown tool {tool}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
