"""Streaming responses that stay streaming under ASGI.

Django serves a StreamingHttpResponse over ASGI by reading a synchronous iterator to the end
into a list first, so a large export would sit in memory whole. `in_chunks` turns a
synchronous iterator (database reads and all) into an asynchronous one that pulls one chunk
at a time, in the thread where the request's database connection lives.
"""

from asgiref.sync import sync_to_async

_END = object()


async def in_chunks(iterable):
    iterator = iter(iterable)
    pull = sync_to_async(next, thread_sensitive=True)
    while True:
        chunk = await pull(iterator, _END)
        if chunk is _END:
            return
        yield chunk
