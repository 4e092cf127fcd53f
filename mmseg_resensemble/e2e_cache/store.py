# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The on-disk E2E output cache: x̂0 = E2E(I0) per training image.

Layout of a cache directory::

    cache_dir/meta.json          format, fingerprint, digest, key root
    cache_dir/entries/NAME.npz   one entry per training image
    cache_dir/users/HOST-PID.json  the runs using the cache, and for which
                                 fingerprint (see :meth:`register_user`)

An entry holds the E2E learner's probabilities of one image at the E2E
decoder's output resolution (h, w), quantised to uint8 (p ≈ q / 255):

* dense: ``probs`` uint8 (h, w, K);
* top-k (``topk=k``): ``topk_index`` (h, w, k), uint8 for K <= 256 else
  uint16, and ``topk_prob`` uint8 (h, w, k); the probability left over is
  spread evenly over the other K − k classes when the entry is read.

Every entry also stores a JSON ``header`` with the format version, the
cache's fingerprint digest, its key and its shape, so that an entry of
another cache, another image or another format is never read as valid.
Entries and the meta file are written atomically (a temporary file in the
same folder, then ``os.replace``): a killed writer leaves either the old
file, the new file or a stray ``.tmp-*`` file, never a corrupt entry.

Entries are keyed by the image path relative to the cache's key root (the
training set's ``data_root``), so a moved data set keeps its cache.

Runs with the same fingerprint may share a cache. A run with another
fingerprint (another E2E learner, pipeline or class list) would rebuild it
under a run that is reading it, so it is refused while that run lives.
"""
import hashlib
import json
import os
import os.path as osp
import re
import socket
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..utils.atomic_write import (atomic_write, is_partial_file,
                                  remove_partial_files)
from .fingerprint import canonical_json

FORMAT_NAME = 'resensemble-e2e-cache'
FORMAT_VERSION = 1
META_FILE = 'meta.json'
ENTRIES_DIR = 'entries'
USERS_DIR = 'users'
# quantisation scale: probabilities are stored as round(p * 255) in uint8
QUANT_MAX = 255

__all__ = [
    'E2ECacheError', 'E2ECacheStore', 'FORMAT_NAME', 'FORMAT_VERSION',
    'encode_probs', 'decode_entry'
]


class E2ECacheError(ValueError):
    """A missing, truncated, corrupt or stale E2E cache file."""


def quantize(probs: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] (any shape) -> uint8 round(p * 255)."""
    return np.rint(np.clip(probs, 0., 1.) * QUANT_MAX).astype(np.uint8)


def topk_index_dtype(num_classes: int) -> type:
    """The dtype of the class indices of a top-k entry."""
    return np.uint8 if num_classes <= 256 else np.uint16


def encode_probs(probs: torch.Tensor,
                 *,
                 topk: Optional[int] = None) -> Dict[str, np.ndarray]:
    """E2E probabilities (K, h, w) -> the arrays of a cache entry.

    Args:
        probs (Tensor): Probabilities (K, h, w), summing to 1 over K.
        topk (int, optional): Keep the k most probable classes per pixel;
            None keeps all K.

    Returns:
        dict[str, np.ndarray]: ``probs`` uint8 (h, w, K), or ``topk_index``
        (h, w, k) and ``topk_prob`` uint8 (h, w, k).
    """
    if probs.dim() != 3:
        raise ValueError(f'probs must be (K, h, w), got {tuple(probs.shape)}')
    probs = probs.detach().float().cpu()
    num_classes = probs.shape[0]
    if topk is None:
        return dict(probs=quantize(probs.permute(1, 2, 0).numpy()))
    if not 1 <= topk < num_classes:
        raise ValueError(f'topk={topk} must be in [1, num_classes) = '
                         f'[1, {num_classes})')
    values, index = probs.topk(topk, dim=0)
    index_dtype = topk_index_dtype(num_classes)
    return dict(
        topk_index=index.permute(1, 2, 0).numpy().astype(index_dtype),
        topk_prob=quantize(values.permute(1, 2, 0).numpy()))


def decode_entry(arrays: Dict[str, np.ndarray],
                 num_classes: int) -> np.ndarray:
    """The arrays of a (validated) entry -> dense uint8 (h, w, K)."""
    if 'probs' in arrays:
        return arrays['probs']
    index = arrays['topk_index'].astype(np.int64)
    prob = arrays['topk_prob'].astype(np.float32) / QUANT_MAX
    k = index.shape[-1]
    rest = np.clip(1. - prob.sum(-1, keepdims=True), 0., 1.)
    dense = np.broadcast_to(rest / (num_classes - k),
                            index.shape[:2] + (num_classes, )).copy()
    np.put_along_axis(dense, index, prob, axis=-1)
    return quantize(dense)


def _entry_name(key: str) -> str:
    """A readable, unique file name for the entry of ``key``."""
    readable = re.sub(r'[^A-Za-z0-9._-]+', '_', key)[-80:]
    return f'{readable}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz'


def _pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` runs on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class E2ECacheStore:
    """Read and write one E2E cache directory.

    Args:
        cache_dir (str): The cache directory (created on first write).
    """

    def __init__(self, cache_dir: str) -> None:
        if not isinstance(cache_dir, str) or not cache_dir:
            raise ValueError(
                f'cache_dir must be a non-empty str, got {cache_dir!r}')
        self.cache_dir = cache_dir
        self.meta_path = osp.join(cache_dir, META_FILE)
        self.entries_dir = osp.join(cache_dir, ENTRIES_DIR)
        self.users_dir = osp.join(cache_dir, USERS_DIR)
        self._meta_cache: Optional[Tuple[Tuple[int, int], dict]] = None

    # ------------------------------------------------------------------
    # meta file
    # ------------------------------------------------------------------
    def read_meta(self) -> dict:
        """The cache's meta data.

        Raises:
            E2ECacheError: The meta file is missing, unreadable or not a
                meta file of this format.
        """
        if not osp.isfile(self.meta_path):
            raise E2ECacheError(
                f'no E2E cache at {self.cache_dir}: {self.meta_path} does '
                "not exist (build it with custom_hooks = [dict(type='"
                "E2ECacheHook', ...)])")
        try:
            with open(self.meta_path, encoding='utf-8') as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise E2ECacheError(
                f'E2E cache meta file {self.meta_path} is unreadable: {e}'
            ) from e
        required = ('format', 'version', 'digest', 'num_classes', 'topk',
                    'key_root')
        if not isinstance(meta, dict) or any(k not in meta for k in required):
            raise E2ECacheError(
                f'E2E cache meta file {self.meta_path} lacks one of '
                f'{list(required)}')
        if (meta['format'], meta['version']) != (FORMAT_NAME, FORMAT_VERSION):
            raise E2ECacheError(
                f'E2E cache meta file {self.meta_path} has format '
                f'{meta["format"]!r} version {meta["version"]!r}, expected '
                f'{FORMAT_NAME!r} version {FORMAT_VERSION}')
        return meta

    def cached_meta(self) -> dict:
        """:meth:`read_meta`, re-read only when the file has changed."""
        try:
            st = os.stat(self.meta_path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if (stamp is not None and self._meta_cache is not None
                and self._meta_cache[0] == stamp):
            return self._meta_cache[1]
        meta = self.read_meta()
        self._meta_cache = (stamp, meta)
        return meta

    def write_meta(self,
                   *,
                   digest: str,
                   fingerprint: Dict[str, Any],
                   num_classes: int,
                   topk: Optional[int],
                   key_root: str,
                   complete: bool = False,
                   **extra: Any) -> dict:
        """Write the meta file atomically.

        Args:
            digest (str): :func:`~.fingerprint.fingerprint_digest` of
                ``fingerprint``.
            fingerprint (dict): What the entries depend on.
            num_classes (int): K, the channels of a decoded entry.
            topk (int, optional): The entries' top-k, None if dense.
            key_root (str): Image paths are keyed relative to this folder.
            complete (bool): Every training image has a valid entry.
            **extra: More JSON-serialisable fields (informational).

        Returns:
            dict: The meta data written.
        """
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f'num_classes must be an int >= 2, got {num_classes!r}')
        meta = dict(
            format=FORMAT_NAME,
            version=FORMAT_VERSION,
            digest=digest,
            fingerprint=fingerprint,
            num_classes=num_classes,
            topk=topk,
            key_root=osp.abspath(key_root),
            complete=bool(complete),
            updated=time.strftime('%Y-%m-%dT%H:%M:%S%z'),
            **extra)
        os.makedirs(self.entries_dir, exist_ok=True)
        text = json.dumps(
            json.loads(canonical_json(meta)), indent=2, sort_keys=True)
        atomic_write(self.meta_path, lambda f: f.write(text.encode()), 0o644)
        return meta

    # ------------------------------------------------------------------
    # entries
    # ------------------------------------------------------------------
    @staticmethod
    def key_for(img_path: str, key_root: str) -> str:
        """The entry key of ``img_path``: its path relative to
        ``key_root``, with '/' separators."""
        rel = osp.relpath(osp.abspath(img_path), osp.abspath(key_root))
        if rel == '..' or rel.startswith('..' + os.sep):
            raise E2ECacheError(
                f'image {img_path} is outside the E2E cache key root '
                f'{key_root}: the cache was built for another data set')
        return rel.replace(os.sep, '/')

    def entry_path(self, key: str) -> str:
        """The file of the entry ``key``."""
        return osp.join(self.entries_dir, _entry_name(key))

    def write_entry(self,
                    key: str,
                    probs: torch.Tensor,
                    *,
                    meta: dict,
                    compress: bool = True,
                    **header: Any) -> str:
        """Encode and atomically write the entry of ``key``.

        Args:
            key (str): The entry key (see :meth:`key_for`).
            probs (Tensor): E2E probabilities (K, h, w).
            meta (dict): The cache's meta data (digest, num_classes, topk).
            compress (bool): zlib-compress the ``.npz``. Defaults to True.
            **header: More JSON-serialisable header fields.

        Returns:
            str: The entry's path.
        """
        if probs.shape[0] != meta['num_classes']:
            raise ValueError(
                f'probs of {key} have {probs.shape[0]} classes, the cache '
                f'has num_classes={meta["num_classes"]}')
        arrays = encode_probs(probs, topk=meta['topk'])
        head = dict(
            format=FORMAT_NAME,
            version=FORMAT_VERSION,
            digest=meta['digest'],
            key=key,
            num_classes=int(probs.shape[0]),
            topk=meta['topk'],
            shape=list(probs.shape[1:]),
            **header)
        arrays['header'] = np.array(canonical_json(head))
        path = self.entry_path(key)
        os.makedirs(self.entries_dir, exist_ok=True)
        save = np.savez_compressed if compress else np.savez
        atomic_write(path, lambda f: save(f, **arrays), 0o644)
        return path

    def read_entry(self, key: str, *, meta: dict) -> Tuple[np.ndarray, dict]:
        """Read and validate the entry of ``key``.

        Args:
            key (str): The entry key.
            meta (dict): The cache's meta data.

        Returns:
            tuple[np.ndarray, dict]: The dense quantised probabilities,
            uint8 (h, w, K) with q / 255 ≈ p, and the entry's header.

        Raises:
            E2ECacheError: The entry is missing, truncated, corrupt, of
                another cache (fingerprint), key, format or class count,
                or holds values that are not quantised probabilities. The
                message names the file.
        """
        arrays, header = self._load_entry(key, meta)
        return decode_entry(arrays, meta['num_classes']), header

    def check_entry(self, key: str, *, meta: dict) -> dict:
        """Validate the entry of ``key`` as :meth:`read_entry` does,
        without decoding its probabilities.

        Returns:
            dict: The entry's header.

        Raises:
            E2ECacheError: As :meth:`read_entry`.
        """
        return self._load_entry(key, meta)[1]

    def _load_entry(self, key: str,
                    meta: dict) -> Tuple[Dict[str, np.ndarray], dict]:
        """The validated arrays of the entry of ``key`` and its header."""
        path = self.entry_path(key)
        if not osp.isfile(path):
            raise E2ECacheError(
                f'E2E cache entry {path} (image {key}) is missing: rebuild '
                'the cache with the E2ECacheHook')
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except Exception as e:  # zip, zlib, CRC, npy header errors
            raise E2ECacheError(
                f'E2E cache entry {path} (image {key}) is truncated or '
                f'corrupt: {type(e).__name__}: {e}') from e
        return arrays, self._check_entry(path, key, arrays, meta)

    @staticmethod
    def _check_entry(path: str, key: str, arrays: Dict[str, np.ndarray],
                     meta: dict) -> dict:
        """Validate the arrays of an entry against ``meta``; the header."""

        def fail(why: str) -> None:
            raise E2ECacheError(f'E2E cache entry {path} (image {key}) is '
                                f'invalid: {why}')

        if 'header' not in arrays or arrays['header'].dtype.kind != 'U':
            fail('no header')
        try:
            header = json.loads(str(arrays['header']))
        except ValueError:
            fail('unreadable header')
        if (header.get('format'), header.get('version')) != (FORMAT_NAME,
                                                             FORMAT_VERSION):
            fail(f'format {header.get("format")!r} version '
                 f'{header.get("version")!r}, expected {FORMAT_NAME!r} '
                 f'version {FORMAT_VERSION}')
        if header.get('digest') != meta['digest']:
            fail('it was written for another fingerprint (stale entry of '
                 'an older E2E model, pipeline or format); rebuild the '
                 'cache with the E2ECacheHook')
        if header.get('key') != key:
            fail(f'it holds image {header.get("key")!r}')
        num_classes, topk = meta['num_classes'], meta['topk']
        if header.get('num_classes') != num_classes:
            fail(f'{header.get("num_classes")} classes, the cache has '
                 f'num_classes={num_classes}')
        h, w = header.get('shape', (None, None))
        if topk is None:
            probs = arrays.get('probs')
            if probs is None:
                fail('no `probs` array')
            if probs.dtype != np.uint8 or probs.shape != (h, w, num_classes):
                fail(f'`probs` is {probs.dtype} {probs.shape}, expected '
                     f'uint8 {(h, w, num_classes)}')
            total = probs.sum(-1, dtype=np.int64)
            # each of K roundings is off by at most 1/2
            slack = num_classes // 2 + 1
            if total.min() < QUANT_MAX - slack or total.max(
            ) > QUANT_MAX + slack:
                fail('its probabilities do not sum to 1 (range '
                     f'{total.min() / QUANT_MAX:.3f}..'
                     f'{total.max() / QUANT_MAX:.3f})')
        else:
            index, prob = arrays.get('topk_index'), arrays.get('topk_prob')
            if index is None or prob is None:
                fail('no `topk_index`/`topk_prob` arrays')
            index_dtype = topk_index_dtype(num_classes)
            if index.dtype != index_dtype or index.shape != (h, w, topk):
                fail(f'`topk_index` is {index.dtype} {index.shape}, '
                     f'expected {np.dtype(index_dtype)} {(h, w, topk)}')
            if prob.dtype != np.uint8 or prob.shape != (h, w, topk):
                fail(f'`topk_prob` is {prob.dtype} {prob.shape}, expected '
                     f'uint8 {(h, w, topk)}')
            if index.size and int(index.max()) >= num_classes:
                fail(f'class index {int(index.max())} >= num_classes='
                     f'{num_classes}')
            if topk > 1 and (np.diff(np.sort(index, -1), axis=-1) == 0).any():
                fail('a pixel repeats a class in its top-k')
            if prob.sum(-1, dtype=np.int64).max() > QUANT_MAX + topk:
                fail('its top-k probabilities sum to more than 1')
        return header

    def entry_keys_on_disk(self) -> Dict[str, str]:
        """Entry file name -> path of every ``.npz`` on disk."""
        if not osp.isdir(self.entries_dir):
            return {}
        return {
            name: osp.join(self.entries_dir, name)
            for name in os.listdir(self.entries_dir)
            if name.endswith('.npz') and not is_partial_file(name)
        }

    def remove_entries(self) -> int:
        """Delete every entry; returns how many were removed."""
        paths = self.entry_keys_on_disk().values()
        for path in paths:
            os.remove(path)
        return len(paths)

    def remove_stale_tmp(self, max_age_s: float = 3600.) -> int:
        """Delete temporary files older than ``max_age_s`` seconds (left by
        killed writers; younger ones may belong to a live writer)."""
        return sum(
            len(remove_partial_files(folder, max_age_s))
            for folder in (self.cache_dir, self.entries_dir, self.users_dir))

    # ------------------------------------------------------------------
    # runs using the cache
    # ------------------------------------------------------------------
    def register_user(self, digest: str, run: str) -> str:
        """Record that this process uses the cache for ``digest``.

        Registers first, then looks at the other users, so two runs that
        start together with different fingerprints both see each other and
        both refuse (neither rebuilds under the other). Users on this host
        whose process is gone (killed runs) are removed; users on another
        host cannot be checked and count as running.

        Args:
            digest (str): The fingerprint digest this run needs.
            run (str): What names the run in messages (e.g. its work dir).

        Returns:
            str: This process's user file, for :meth:`release_user`.

        Raises:
            E2ECacheError: Another live run uses the cache with another
                fingerprint; the message names that run.
        """
        os.makedirs(self.users_dir, exist_ok=True)
        host, pid = socket.gethostname(), os.getpid()
        path = osp.join(self.users_dir, f'{host}-{pid}.json')
        me = dict(
            digest=digest,
            run=run,
            host=host,
            pid=pid,
            since=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
        atomic_write(path, lambda f: f.write(json.dumps(me).encode()), 0o644)
        others = []
        for name in sorted(os.listdir(self.users_dir)):
            other_path = osp.join(self.users_dir, name)
            if other_path == path or not name.endswith('.json'):
                continue
            try:
                with open(other_path, encoding='utf-8') as f:
                    other = json.load(f)
            except (OSError, ValueError):  # a half-gone user, or garbage
                continue
            if other.get('digest') == digest:
                continue
            if other.get('host') == host and not _pid_alive(other.get('pid')):
                os.remove(other_path)  # a killed run's
                continue
            others.append((other_path, other))
        if others:
            self.release_user(path)
            other_path, other = others[0]
            raise E2ECacheError(
                f'E2E cache {self.cache_dir} is in use by another run with '
                f'another E2E learner, pipeline or classes: '
                f"{other.get('run')!r} (host {other.get('host')}, pid "
                f"{other.get('pid')}, since {other.get('since')}; "
                f'{other_path}). Building it here would replace the entries '
                'under that run: give this run its own cache_dir, or wait '
                'until that run ends (delete the file if it is no longer '
                'running)')
        return path

    @staticmethod
    def release_user(path: str) -> None:
        """Remove a user file of :meth:`register_user` (if still there)."""
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def disk_bytes(self) -> int:
        """Bytes on disk of all entries."""
        return sum(osp.getsize(p) for p in self.entry_keys_on_disk().values())
