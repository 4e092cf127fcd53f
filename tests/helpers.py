# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Small helpers shared by the tests."""
import socket

import torch


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def head_weights(path: str) -> dict:
    """The diffusion head's weights in the checkpoint at ``path``."""
    state = torch.load(path)['state_dict']  # weights_only
    return {k: v for k, v in state.items() if k.startswith('decode_head.')}
