"""A pyfunc model (MLflow "models from code") whose predict a test can steer.

Its ``model_config`` names a directory. With a file ``fail`` there, predict
raises; with ``armed`` there, predict writes ``started`` and waits for
``release`` (or for two minutes), so a test can hold a promotion between its
check and its alias write, deterministically.
"""

import os
import time

import mlflow
from mlflow.pyfunc import PythonModel


class BlockingModel(PythonModel):
    def load_context(self, context):
        self.gate_dir = context.model_config["gate_dir"]

    def predict(self, context, model_input, params=None):
        if os.path.exists(os.path.join(self.gate_dir, "fail")):
            raise RuntimeError("this model is broken on purpose")
        if os.path.exists(os.path.join(self.gate_dir, "armed")):
            open(os.path.join(self.gate_dir, "started"), "w").close()
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(self.gate_dir, "release")):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        return [0] * len(model_input)


mlflow.models.set_model(BlockingModel())
