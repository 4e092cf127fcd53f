# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The E2E output cache: x̂0 = E2E(I0) of every training image, computed
once before training (``E2ECacheHook``) and read by the train pipeline
(``LoadE2ECache``)."""
from .builder import E2ECacheBuilder
from .cache_dir import config_type_name, e2e_cache_hooks, set_e2e_cache_dir
from .fingerprint import (canonical_json, file_sha256, fingerprint_digest,
                          fingerprint_fields, state_dict_sha256)
from .hook import E2ECacheHook, build_e2e_cache
from .store import (FORMAT_NAME, FORMAT_VERSION, E2ECacheError, E2ECacheStore,
                    decode_entry, encode_probs)
from .transforms import LoadE2ECache

__all__ = [
    'E2ECacheBuilder', 'E2ECacheError', 'E2ECacheHook', 'E2ECacheStore',
    'FORMAT_NAME', 'FORMAT_VERSION', 'LoadE2ECache', 'build_e2e_cache',
    'canonical_json', 'config_type_name', 'decode_entry', 'e2e_cache_hooks',
    'encode_probs', 'file_sha256', 'fingerprint_digest', 'fingerprint_fields',
    'set_e2e_cache_dir', 'state_dict_sha256'
]
