"""Triton Python-backend loader for ``model.pt`` (copied into every version directory).

Runs inside Triton's backend stub, not in our package: it imports only torch, numpy and
``triton_python_backend_utils``. It batches all requests of one ``execute`` call when their
shapes agree, which is what dynamic batching hands it.
"""
# mypy: ignore-errors
# ruff: noqa

import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

INPUTS = ("user_row", "history_rows", "candidate_rows")


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.dirname(os.path.abspath(__file__))
        torch.set_num_threads(int(os.environ.get("FRESHRANK_TRITON_THREADS", "1")))
        self.model = torch.jit.load(os.path.join(here, "model.pt"), map_location="cpu")
        self.model.eval()

    def execute(self, requests):
        responses = []
        with torch.inference_mode():
            for request in requests:
                try:
                    tensors = [
                        torch.from_numpy(
                            np.ascontiguousarray(
                                pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                            ).astype(np.int64, copy=False)
                        )
                        for name in INPUTS
                    ]
                    scores = self.model(*tensors).float().numpy()
                    responses.append(
                        pb_utils.InferenceResponse([pb_utils.Tensor("scores", scores)])
                    )
                except Exception as exc:  # a bad request must not take the model down
                    responses.append(
                        pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                    )
        return responses
