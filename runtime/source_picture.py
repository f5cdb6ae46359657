"""The user's own picture (and mask) for `edit`: reading them, fitting them to the engines, and putting the result back.

Place in the data flow of `edit` (SDEdit: the picture is encoded, noised to a strength, then denoised with the
sound's prompt):
**load_picture**, **load_mask** -> **Framing.to_engine**, **Framing.mask_to_engine** -> **to_engine_image**,
**latent_mask** -> encode_image -> noise -> denoise -> decode_latents -> to_pictures -> **Framing.from_engine** ->
**composite** -> save_png.

Reading. `load_picture` takes a path, a PIL image or a numpy array and gives a `SourcePicture`: RGB pixels, the
alpha channel when the picture has transparency (so the result gets it back), a name and a SHA-256. Files are
read with Pillow as PNG, JPEG, WebP, AVIF, GIF, BMP or TIFF (the first frame of an animation), any mode: RGB(A),
greyscale (L, LA, 1; 16-bit I;16 and I scaled from 0..65535; float F taken in [0, 1], as float arrays are),
palette (its transparency becomes alpha), CMYK, YCbCr. The EXIF orientation is applied, so phone photos are
upright. Colour profiles (ICC) are not applied: pixels are taken as sRGB, as the rest of the runtime does.
`load_mask` reads a mask the same way: white (>= 50% grey, diffusers' binarisation) may change, black is kept, a
transparent pixel counts as black; a mask of another size than the picture is stretched to it (nearest) with a note.

Safety. A file is decoded in full before use, so a truncated PNG, JPEG, WebP, GIF, BMP or TIFF fails: this relies on
Pillow's process-wide `ImageFile.LOAD_TRUNCATED_IMAGES` staying off (its default; nothing here turns it on). A
picture over `max_pixels` (64 Mi pixels by default, room for a 64-megapixel phone photo) is refused from its
header, before its pixels are decoded. Pillow's own decompression-bomb check (`Image.MAX_IMAGE_PIXELS`, left as it
is) also becomes the one-line error, its warning included, so the limit is the lower of the two. Every failure is a
one-line `ConfigError` that names the file (or the given name) and has a hint.

Fitting mode ("fit, reflect the margins"). The engines have one fixed size (the bundle's width x height). `Framing.fit`
scales the picture uniformly so that it fits inside that size, its long side (relative to the engine's aspect)
filling it; the scaled picture (the content) is centred and the margins are filled by mirroring the content at its
edges (numpy "reflect"; "edge", i.e. the last row or column repeated, for what a margin needs beyond one mirror
image of the content), so diffusion sees a natural picture rather than bars. The engine mask is 0 (keep) in the
margins when a mask is used; without one there is no engine mask and the margins may change freely, since they
are cut off. `from_engine` crops the margins away and scales the content back to the picture's own size, so the
user gets their picture back at its own size and framing; a picture of exactly the engine size passes unchanged.
Resizing is Lanczos for pictures and nearest for masks. Sizes are (width, height), as in Pillow; arrays are [H, W].

Engine tensors. `to_engine_image` is diffusers' VaeImageProcessor.preprocess (x / 255 * 2 - 1, [1, 3, h, w]);
`latent_mask` is how diffusers' StableDiffusionInpaintPipeline brings its binarised mask to the latent size
(torch.nn.functional.interpolate, mode "nearest": source index floor(i * in / out) in float32).

Result. `composite` keeps every black (keep) pixel of the mask exactly the user's: the edited picture shows
through the white region only, with a feathered edge that lies inside it. The source's alpha is put back.

Only numpy and Pillow are used: never torch.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from runtime.errors import ConfigError, first_line

MAX_PIXELS = 2**26  # 64 Mi pixels (67.1 M): a 64 MP phone photo (9248 x 6936) fits; larger is refused before decoding
PICTURE_FORMATS = ("PNG", "JPEG", "WEBP", "AVIF", "GIF", "BMP", "TIFF")  # Pillow format names; JPEG includes MPO
_FORMATS_IN_WORDS = "PNG, JPEG, WebP, AVIF, GIF, BMP or TIFF"
_HINT_REEXPORT = "the file was cut short or damaged (interrupted copy or download?): re-export or re-download it"
_HINT_ARRAY = "pass uint8 (0..255), uint16 (0..65535), bool, or float in [0, 1], shaped [H, W], [H, W, 3] or [H, W, 4]"

PictureSource = str | os.PathLike | bytes | Image.Image | np.ndarray


@dataclass(frozen=True, eq=False)
class SourcePicture:
    """A user's picture as read: RGB pixels, its alpha when it has transparency, a name and a digest."""

    rgb: np.ndarray  # [H, W, 3] uint8, read-only
    alpha: np.ndarray | None  # [H, W] uint8, read-only (255 = opaque); None when the picture has no transparency
    name: str  # the file name, the name given, or "picture"
    sha256: str  # of the file's bytes; for a PIL image or an array, of its size and decoded pixels

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow gives sizes."""
        return self.rgb.shape[1], self.rgb.shape[0]


@dataclass(frozen=True, eq=False)
class Mask:
    """Where a picture may change: 1 (a white pixel of the mask file), and where it is kept: 0 (black)."""

    may_change: np.ndarray  # [H, W] float32 in {0, 1}, read-only, at the picture's size
    name: str  # the file name, the name given, or "mask"
    sha256: str  # as SourcePicture.sha256, of the mask as given (before any resize)
    note: str | None  # what was done to fit it to the picture (a resize), for the user; None when nothing was


def load_picture(source: PictureSource, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> SourcePicture:
    """Read a picture file (path), a PIL image or an array ([H, W], [H, W, 3] or [H, W, 4]) into a SourcePicture.

    Arrays are uint8 (0..255), uint16 (0..65535), bool, or float in [0, 1]. The EXIF orientation of a file or PIL
    image is applied. `name` names a PIL image or an array (default: the PIL image's file name, else "picture").
    Raises ConfigError, one line naming the file: missing, a folder, unreadable, empty, not a picture, truncated or
    corrupt, over `max_pixels` (or Pillow's decompression-bomb limit), zero-size, or an array of a bad shape,
    dtype or value range.
    """
    return _load(source, name, "picture", max_pixels)


def load_mask(
    source: PictureSource, size: tuple[int, int], *, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> Mask:
    """Read a mask for a picture of `size` (width, height): white (>= 50% grey) may change, black is kept.

    Any picture `load_picture` reads will do; it becomes grey as Pillow's convert("L") does, then a transparent
    pixel counts as black (grey * alpha). A mask of another size is stretched to `size` (nearest) and `note` says
    so. Raises ConfigError as `load_picture` does, and when no pixel may change (an all-black mask).
    """
    picture = _load(source, name, "mask", max_pixels)
    label = str(source) if isinstance(source, (str, os.PathLike)) else picture.name
    grey = np.asarray(Image.fromarray(picture.rgb, mode="RGB").convert("L"), dtype=np.float32) / 255.0  # [h, w]
    if picture.alpha is not None:
        grey = grey * (picture.alpha.astype(np.float32) / 255.0)  # [h, w]: transparent -> black (keep)
    may_change = (grey >= 0.5).astype(np.float32)  # [h, w] in {0, 1}: diffusers' binarize (< 0.5 -> 0)

    note = None
    if picture.size != tuple(size):
        (mask_w, mask_h), (width, height) = picture.size, size
        note = f"{picture.name} is {mask_w}x{mask_h}, the picture {width}x{height}: resized to {width}x{height}"
        had_white = bool(may_change.any())
        may_change = _resize_nearest(may_change, (width, height))  # [H, W]
        if had_white and not may_change.any():
            raise ConfigError(
                f"{label}: its white parts vanish when the {mask_w}x{mask_h} mask is resized to {width}x{height}",
                hint="make the mask the picture's size, or its white parts larger",
            )
    if not may_change.any():
        raise ConfigError(
            f"{label}: the mask is all black (keep everywhere): nothing may change",
            hint="paint white where the picture may change and black where it must stay; or leave out the mask",
        )
    may_change.setflags(write=False)
    return Mask(may_change=may_change, name=picture.name, sha256=picture.sha256, note=note)


@dataclass(frozen=True)
class Framing:
    """Where a picture sits in the engines' fixed frame: scaled to fit, centred, margins mirrored (see the module).

    Sizes are (width, height); `offset` is the content's (left, top) in the engine frame.
    """

    picture_size: tuple[int, int]  # (W, H): the user's picture
    engine_size: tuple[int, int]  # (w, h): the engines' frame
    content_size: tuple[int, int]  # (cw, ch): the picture scaled to fit inside the frame
    offset: tuple[int, int]  # (left, top) of the content in the frame; the rest is margin

    @classmethod
    def fit(cls, picture_size: tuple[int, int], engine_size: tuple[int, int]) -> Framing:
        """Scale `picture_size` uniformly to fit inside `engine_size`, its long side filling it, and centre it."""
        (width, height), (engine_w, engine_h) = picture_size, engine_size
        if min(width, height, engine_w, engine_h) < 1:
            raise ValueError(f"sizes must be positive, got picture {picture_size} and engine {engine_size}")
        if width * engine_h >= height * engine_w:  # relatively wider than the frame: the width fills it
            content_w, content_h = engine_w, max(1, (2 * height * engine_w + width) // (2 * width))  # round(H * w / W)
        else:
            content_w, content_h = max(1, (2 * width * engine_h + height) // (2 * height)), engine_h
        offset = ((engine_w - content_w) // 2, (engine_h - content_h) // 2)
        return cls(
            picture_size=(width, height),
            engine_size=(engine_w, engine_h),
            content_size=(content_w, content_h),
            offset=offset,
        )

    def to_engine(self, rgb: np.ndarray) -> np.ndarray:
        """The picture [H, W, 3] uint8 -> the engine frame [h, w, 3] uint8: Lanczos resize, margins mirrored."""
        _expect(rgb, (*self.picture_size[::-1], 3), np.uint8, "the picture")
        content = _resize_lanczos(rgb, self.content_size)  # [ch, cw, 3] uint8
        return _pad_reflecting(content, self._margins())  # [h, w, 3] uint8

    def mask_to_engine(self, may_change: np.ndarray) -> np.ndarray:
        """A mask [H, W] float32 in {0, 1} -> the engine frame [h, w] float32: nearest resize, margins 0 (keep)."""
        _expect(may_change, self.picture_size[::-1], np.float32, "the mask")
        content = _resize_nearest(may_change, self.content_size)  # [ch, cw]
        return np.pad(content, self._margins(), mode="constant", constant_values=0.0)  # [h, w] float32

    def from_engine(self, edited: np.ndarray) -> np.ndarray:
        """The edited engine frame [h, w, 3] uint8 -> [H, W, 3] uint8: margins cropped, Lanczos resize back."""
        _expect(edited, (*self.engine_size[::-1], 3), np.uint8, "the edited picture")
        (left, top), (content_w, content_h) = self.offset, self.content_size
        content = edited[top : top + content_h, left : left + content_w]  # [ch, cw, 3] uint8
        return _resize_lanczos(content, self.picture_size)  # [H, W, 3] uint8

    def _margins(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) margin widths in pixels, as np.pad takes them."""
        (engine_w, engine_h), (content_w, content_h), (left, top) = self.engine_size, self.content_size, self.offset
        return (top, engine_h - content_h - top), (left, engine_w - content_w - left)


def to_engine_image(rgb: np.ndarray) -> np.ndarray:
    """An engine-frame picture [h, w, 3] uint8 -> the VAE encoder's input [1, 3, h, w] float32 in [-1, 1]."""
    _expect(rgb, (None, None, 3), np.uint8, "the engine picture")
    unit = rgb.astype(np.float32) / 255.0  # [h, w, 3] in [0, 1]: diffusers' pil_to_numpy
    signed = 2.0 * unit - 1.0  # [h, w, 3] in [-1, 1]: diffusers' normalize
    return np.ascontiguousarray(signed.transpose(2, 0, 1)[None])  # [1, 3, h, w] float32


def latent_mask(may_change: np.ndarray, latent_size: tuple[int, int]) -> np.ndarray:
    """An engine-frame mask [h, w] float32 -> [1, 1, lh, lw] float32 in {0, 1} for `latent_size` (lh, lw).

    Binarised (< 0.5 -> 0, else 1), then torch.nn.functional.interpolate(mask, size=(lh, lw)) (mode "nearest").
    """
    _expect(may_change, (None, None), np.float32, "the engine mask")
    binary = (may_change >= 0.5).astype(np.float32)  # [h, w] in {0, 1}
    rows = _torch_nearest_indices(binary.shape[0], latent_size[0])  # [lh]
    cols = _torch_nearest_indices(binary.shape[1], latent_size[1])  # [lw]
    return np.ascontiguousarray(binary[rows][:, cols][None, None])  # [1, 1, lh, lw]


def composite(
    edited: np.ndarray, source: SourcePicture, may_change: np.ndarray | None = None, feather: int = 0
) -> Image.Image:
    """The final picture: `edited` [H, W, 3] uint8 where the mask lets it change, the source's pixels elsewhere.

    With a mask ([H, W] float32, 1 = may change), the edited picture's weight rises linearly from 0 at the mask's
    white border to 1 at `feather` pixels inside the white region (chessboard distance; the picture's own edges
    are no border), so every black (keep) pixel is exactly the source's. Without a mask, the edited pixels.
    The source's alpha comes back when it had one (an RGBA result; RGB otherwise).
    """
    if isinstance(feather, bool) or not isinstance(feather, (int, np.integer)) or feather < 0:
        raise ConfigError(
            f"feather must be a whole number of pixels >= 0, got {feather!r}",
            hint="0 gives a hard edge; a few pixels (e.g. 8) blend the edit into the kept part",
        )
    _expect(edited, source.rgb.shape, np.uint8, "the edited picture")
    rgb = edited
    if may_change is not None:
        _expect(may_change, source.rgb.shape[:2], np.float32, "the mask")
        weight = _feathered_weight(may_change >= 0.5, int(feather))[..., None]  # [H, W, 1] in [0, 1]
        kept = source.rgb.astype(np.float32)  # [H, W, 3]
        blended = kept + (edited.astype(np.float32) - kept) * weight  # [H, W, 3]: exactly `kept` where weight is 0
        rgb = np.round(blended).astype(np.uint8)  # [H, W, 3] uint8
    if source.alpha is None:
        return Image.fromarray(rgb, mode="RGB")
    return Image.fromarray(np.dstack([rgb, source.alpha]), mode="RGBA")  # [H, W, 4] uint8


def _read_file(path: Path) -> bytes:
    """The bytes of a readable, non-empty regular file, or a one-line error naming it."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file", hint="check the path and the working directory")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a picture file", hint="pass one picture file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the file ({e.strerror or e})", hint="make the file readable") from e
    if not data:
        raise ConfigError(f"{path}: file is empty (0 bytes)", hint=_HINT_REEXPORT)
    return data


def _load(source: PictureSource, name: str | None, default_name: str, max_pixels: int) -> SourcePicture:
    """`load_picture`'s work; `default_name` names a PIL image without a file name, or an array, when `name` is None."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        data = _read_file(path)
        rgb, alpha = _decode(data, str(path), max_pixels)
        return _picture(rgb, alpha, name or path.name, hashlib.sha256(data).hexdigest())
    if isinstance(source, (bytes, bytearray)):  # a file's bytes, e.g. from a request: the same checks as a file
        label = name or default_name
        if not source:
            raise ConfigError(f"{label}: empty (0 bytes)", hint=f"send the {default_name} file's bytes")
        rgb, alpha = _decode(bytes(source), label, max_pixels)
        return _picture(rgb, alpha, label, hashlib.sha256(source).hexdigest())
    if isinstance(source, Image.Image):
        label = name or (Path(os.fsdecode(source.filename)).name if getattr(source, "filename", "") else default_name)
        rgb, alpha = _decode(source, label, max_pixels)
    elif isinstance(source, np.ndarray):
        label = name or default_name
        rgb, alpha = _pixels_of_array(source, label, max_pixels)
    else:
        raise ConfigError(
            f"{name or default_name}: expected a file path, a file's bytes, a PIL image or a numpy array, got {type(source).__name__}",
            hint=f"pass the {default_name}'s path",
        )
    return _picture(rgb, alpha, label, _pixels_digest(rgb, alpha))


def _decode(source: bytes | Image.Image, label: str, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A picture file's bytes, or a PIL image -> RGB [H, W, 3] and alpha [H, W] (or None) uint8, stood upright.

    The size is checked from the header before anything is decoded; then the whole picture is decoded, so a
    truncated file raises (while ImageFile.LOAD_TRUNCATED_IMAGES is off). Pillow's failures become one-line errors:
    those its own fuzz tests accept from a damaged file (OSError, SyntaxError, ValueError, NotImplementedError,
    OverflowError, MemoryError), EOFError, and the RuntimeError of its AVIF decoder.
    """
    try:
        with warnings.catch_warnings():  # Pillow warns over Image.MAX_IMAGE_PIXELS, raises over twice that
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source), formats=PICTURE_FORMATS) if isinstance(source, bytes) else source
            _check_size(image.size, label, max_pixels)
            image.load()
            upright = ImageOps.exif_transpose(image)
            if upright.mode in ("I", "F") or upright.mode.startswith("I;16"):  # 16-bit, 32-bit or float greyscale
                values = np.asarray(upright)  # [H, W] uint16, int32 or float32
                return _pixels_of_array(_as_uint16(values, label) if upright.mode == "I" else values, label, max_pixels)
            if upright.has_transparency_data:  # RGBA, LA, PA, or a palette or RGB picture with a transparent colour
                rgba = np.asarray(upright.convert("RGBA"))  # [H, W, 4] uint8
                return rgba[..., :3], rgba[..., 3]
            return np.asarray(upright.convert("RGB")), None  # [H, W, 3] uint8
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ConfigError(
            f"{label}: the picture is over Pillow's decompression-bomb limit ({first_line(e)})",
            hint="scale it down first (the engines work at about 512x512)",
        ) from e
    except UnidentifiedImageError as e:
        raise ConfigError(
            f"{label}: not a picture in a format read here ({_FORMATS_IN_WORDS}), or damaged beyond recognition",
            hint="save or convert it as PNG or JPEG",
        ) from e
    except MemoryError as e:
        raise ConfigError(
            f"{label}: not enough memory to decode the picture",
            hint="scale it down first (the engines work at about 512x512)",
        ) from e
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError, OverflowError) as e:  # RuntimeError: AVIF's
        raise ConfigError(
            f"{label}: cannot decode the picture ({first_line(e)}): the file is truncated or corrupt",
            hint=_HINT_REEXPORT,
        ) from e


def _as_uint16(values: np.ndarray, label: str) -> np.ndarray:
    """32-bit greyscale (Pillow mode I) -> uint16, refusing values outside 0..65535 rather than clipping them."""
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise ConfigError(
            f"{label}: 32-bit greyscale values must lie in 0..65535 (16-bit), found {low}..{high}",
            hint="save the picture as 8- or 16-bit greyscale",
        )
    return values.astype(np.uint16)  # [H, W]


def _pixels_of_array(values: np.ndarray, label: str, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """An array [H, W], [H, W, 3] or [H, W, 4] of uint8, uint16, bool or float in [0, 1] -> RGB and alpha, uint8."""
    if values.ndim not in (2, 3) or (values.ndim == 3 and values.shape[2] not in (3, 4)):
        raise ConfigError(
            f"{label}: expected a picture array shaped [H, W], [H, W, 3] or [H, W, 4], got shape {values.shape}",
            hint=_HINT_ARRAY,
        )
    _check_size((values.shape[1], values.shape[0]), label, max_pixels)
    if values.dtype == np.uint8:
        pixels = values
    elif values.dtype == np.bool_:
        pixels = values.astype(np.uint8) * np.uint8(255)
    elif values.dtype.kind == "u" and values.dtype.itemsize == 2:  # uint16, either byte order
        pixels = ((values.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)  # round(v * 255 / 65535)
    elif values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all() or values.min() < 0 or values.max() > 1:
            found = "non-finite values" if not finite.all() else f"{float(values.min()):g}..{float(values.max()):g}"
            raise ConfigError(f"{label}: float pixels must lie in [0, 1], found {found}", hint=_HINT_ARRAY)
        pixels = np.round(values.astype(np.float32) * 255).astype(np.uint8)  # as diffusers' numpy_to_pil
    else:
        raise ConfigError(f"{label}: pixel dtype {values.dtype} is not supported", hint=_HINT_ARRAY)
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2), None  # [H, W, 3]
    return pixels[..., :3], (pixels[..., 3] if pixels.shape[2] == 4 else None)  # [H, W, 3], [H, W] or None


def _check_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    """Refuse a zero-size picture, and one over `max_pixels` (from its header, before decoding)."""
    width, height = size
    if width < 1 or height < 1:
        raise ConfigError(f"{label}: the picture is {width}x{height} pixels: it is empty", hint=_HINT_REEXPORT)
    if width * height > max_pixels:
        raise ConfigError(
            f"{label}: the picture is {width}x{height} ({width * height / 1e6:.3g} megapixels), "
            f"over the limit of {max_pixels / 1e6:.3g} megapixels",
            hint="scale it down first (the engines work at about 512x512), or raise max_pixels",
        )


def _picture(rgb: np.ndarray, alpha: np.ndarray | None, name: str, digest: str) -> SourcePicture:
    """A SourcePicture of contiguous, read-only arrays."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)  # [H, W, 3]
    rgb.setflags(write=False)
    if alpha is not None:
        alpha = np.ascontiguousarray(alpha, dtype=np.uint8)  # [H, W]
        alpha.setflags(write=False)
    return SourcePicture(rgb=rgb, alpha=alpha, name=name, sha256=digest)


def _pixels_digest(rgb: np.ndarray, alpha: np.ndarray | None) -> str:
    """SHA-256 of "<W>x<H> RGB|RGBA\\n", then the RGB bytes, then the alpha bytes."""
    height, width = rgb.shape[:2]
    digest = hashlib.sha256(f"{width}x{height} {'RGB' if alpha is None else 'RGBA'}\n".encode())
    digest.update(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
    if alpha is not None:
        digest.update(np.ascontiguousarray(alpha, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def _expect(array: np.ndarray, shape: tuple[int | None, ...], dtype: type, what: str) -> None:
    """Refuse an array of another shape (None: any length) or dtype: a caller's mistake, not the user's."""
    fits = len(array.shape) == len(shape) and all(
        want in (None, got) for want, got in zip(shape, array.shape, strict=True)
    )
    if not fits or array.dtype != dtype:
        wanted = "[" + ", ".join("*" if n is None else str(n) for n in shape) + "]"
        raise ValueError(f"{what}: expected {wanted} {np.dtype(dtype)}, got {list(array.shape)} {array.dtype}")


def _resize_lanczos(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 -> [size[1], size[0], 3] uint8 with Pillow's Lanczos filter (a copy at the same size)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").resize(size, Image.Resampling.LANCZOS))


def _resize_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W] -> [size[1], size[0]], each output pixel taking the input pixel under its centre (exactly, in integers)."""
    (width, height), (out_w, out_h) = values.shape[::-1], size
    rows = (2 * np.arange(out_h) + 1) * height // (2 * out_h)  # [out_h]: floor((i + 0.5) * H / out_h)
    cols = (2 * np.arange(out_w) + 1) * width // (2 * out_w)  # [out_w]
    return np.ascontiguousarray(values[rows][:, cols])  # [out_h, out_w]


def _pad_reflecting(content: np.ndarray, margins: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """Pad [ch, cw, C] by ((top, bottom), (left, right)): mirrored content (numpy "reflect"), then its edge repeated
    for what a margin needs beyond one mirror image (a reflection can add at most size - 1 rows or columns)."""
    mirrored = [
        (min(before, n - 1), min(after, n - 1)) for (before, after), n in zip(margins, content.shape[:2], strict=True)
    ]
    beyond = [
        (before - m_before, after - m_after)
        for (before, after), (m_before, m_after) in zip(margins, mirrored, strict=True)
    ]
    padded = np.pad(content, [*mirrored, (0, 0)], mode="reflect")  # [ch + mirrored, cw + mirrored, C]
    return np.pad(padded, [*beyond, (0, 0)], mode="edge")  # [h, w, C]


def _torch_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """The source indices torch's interpolate(mode="nearest") reads, to the float32 rounding of its CPU kernel:
    identity at the same size, i >> 1 at twice the size, else min(floor(i * float32(in / out)), in - 1)."""
    if out_size == in_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    scale = np.float32(in_size) / np.float32(out_size)  # float32, as compute_scales_value<float>
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)  # [out_size]
    return np.minimum(index, in_size - 1)


def _feathered_weight(white: np.ndarray, feather: int) -> np.ndarray:
    """[H, W] bool (True = may change) -> the edit's weight [H, W] float32: min(d / feather, 1), where d is a white
    pixel's chessboard distance to the nearest black one (1 next to it), 0 on black; `white` itself for feather 0.
    d is counted by eroding the white region one pixel at a time (3x3, the picture's outside counting as white)."""
    distance = white.astype(np.float32)  # [H, W]: min(d, feather), counted up one erosion at a time
    eroded = white
    for done in range(feather - 1):
        shrunk = _erode(eroded)
        if not shrunk.any():
            break
        if np.array_equal(shrunk, eroded):  # no black pixel left to grow from (an all-white mask): the rest is the same
            distance += shrunk * np.float32(feather - 1 - done)
            break
        eroded = shrunk
        distance += eroded
    return distance / max(feather, 1)


def _erode(white: np.ndarray) -> np.ndarray:
    """One 3x3 erosion of [H, W] bool: a pixel stays True when its 8 neighbours inside the picture are True."""
    vertical = white.copy()
    vertical[1:] &= white[:-1]
    vertical[:-1] &= white[1:]
    eroded = vertical.copy()
    eroded[:, 1:] &= vertical[:, :-1]
    eroded[:, :-1] &= vertical[:, 1:]
    return eroded
