"""Pillow-SIMD worker: a separate process, because Pillow-SIMD and Pillow are both `PIL` and
cannot share one. Runs with PYTHONPATH pointing at the Pillow-SIMD folder; imports nothing from
robustart. Protocol on stdin/stdout: 8-byte little-endian length, then a pickled tuple.

  ("hello",)                               -> ("ok", PIL version, PIL file)
  ("decode", jpeg bytes)                   -> ("ok", (h, w, 3), rgb bytes)
  ("resize", raw, (h, w, 3), (W, H), flt)  -> ("ok", (H, W, 3), rgb bytes)
  anything failing                         -> ("err", message)
"""

import io
import os
import pickle
import struct
import sys


def _read(f):
    head = f.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(f.read(n))


def _write(f, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(data)))
    f.write(data)
    f.flush()


def main():
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    inp = sys.stdin.buffer
    import PIL
    from PIL import Image

    filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
               "box": Image.BOX, "hamming": Image.HAMMING, "lanczos": Image.LANCZOS}
    while True:
        msg = _read(inp)
        if msg is None:
            return
        try:
            if msg[0] == "hello":
                _write(out, ("ok", PIL.__version__, PIL.__file__))
            elif msg[0] == "decode":
                with Image.open(io.BytesIO(msg[1])) as im:
                    im.load()
                    if im.mode != "RGB":
                        im = im.convert("RGB")
                    _write(out, ("ok", (im.size[1], im.size[0], 3), im.tobytes()))
            elif msg[0] == "resize":
                _, raw, shape, size, flt = msg
                im = Image.frombytes("RGB", (shape[1], shape[0]), raw).resize(tuple(size), filters[flt])
                _write(out, ("ok", (im.size[1], im.size[0], 3), im.tobytes()))
            else:
                _write(out, ("err", f"unknown request {msg[0]!r}"))
        except Exception as e:  # one bad image must not end the worker
            _write(out, ("err", f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    main()
