"""Reading uploads from a request: a raw image body or multipart files, refused as soon as the body
grows past the size limit (before it is all read), with a reason for every refusal."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message, Receive

from .errors import ApiError

__all__ = ["Upload", "read_uploads"]


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name (multipart only) and bytes."""

    filename: str | None
    data: bytes


async def read_uploads(request: Request, *, max_bytes: int, max_files: int, several: bool) -> list[Upload]:
    """The images of a request: its body (``image/*``, ``application/octet-stream`` or no type) or
    the files of a ``multipart/form-data`` body (only one unless ``several``).

    Raises:
        ApiError: 413 when the body is over ``max_bytes`` (by its Content-Length, before reading,
            else as soon as the bytes read pass it), 415 for another media type, 400 for a form
            without a file or with more files than allowed.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    bounded = Request(request.scope, _bounded(request.receive, max_bytes))
    if media_type == "multipart/form-data":
        async with bounded.form(max_files=max_files, max_fields=max_files) as form:
            uploads = [Upload(value.filename, await value.read())
                       for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not uploads:
            raise ApiError(400, "the form has no file: send the image as a file field (curl -F file=@photo.jpg)")
        if len(uploads) > 1 and not several:
            raise ApiError(400, f"{len(uploads)} files in one request: send one image, or use /v1/predict/batch")
        return uploads
    if several:
        raise ApiError(415, "send the images as multipart/form-data files (curl -F file=@a.jpg -F file=@b.jpg)")
    if media_type and media_type != "application/octet-stream" and not media_type.startswith("image/"):
        raise ApiError(415, f"unsupported media type {media_type!r}: send the image's bytes as image/* or "
                            "application/octet-stream, or as a multipart/form-data file")
    return [Upload(None, await bounded.body())]


def _bounded(receive: Receive, max_bytes: int) -> Receive:
    """``receive`` that refuses the body (413) once more than ``max_bytes`` have arrived."""
    received = 0

    async def bounded_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise _too_large(max_bytes)
        return message

    return bounded_receive


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"the upload is larger than this server's limit of {max_bytes / (1 << 20):g} MiB")
