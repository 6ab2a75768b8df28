"""PyTorch side of the shortcut library: its DiT and MLP network, checkpoint folders in and out, the Euler
sampler and a converter from facebookresearch/DiT weights. Depends on torch and numpy only."""
from .checkpoint import CheckpointError, load, load_state, save, weights_file
from .convert import ConversionError, convert_dit, dit_state_dict
from .model import (DiT, MlpNet, check_config, check_mlp_config, default_config, network_from_config,
                    sincos_pos_embed)
from .safetensors import SafetensorsError, read_safetensors, write_safetensors
from .sampling import sample, velocity

__all__ = ["DiT", "MlpNet", "network_from_config", "check_mlp_config", "load", "save", "sample", "velocity", "convert_dit", "dit_state_dict", "default_config",
           "check_config", "sincos_pos_embed", "read_safetensors", "write_safetensors", "load_state",
           "weights_file", "CheckpointError", "ConversionError", "SafetensorsError"]
__version__ = "0.1.0"
