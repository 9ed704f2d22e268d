"""WhiteNoise under ASGI.

WhiteNoise answers with a file response that reads its file synchronously; Django serves such
a response over ASGI by reading it whole into memory in a thread first, and warns
("StreamingHttpResponse must consume synchronous iterators") at each process's first static
file. Served to an ASGI request, the file is read a block at a time instead (`in_chunks`).
"""

from django.core.handlers.asgi import ASGIRequest
from whitenoise.middleware import WhiteNoiseFileResponse, WhiteNoiseMiddleware

from console.lib.streaming import in_chunks


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    def __call__(self, request):
        response = super().__call__(request)
        if isinstance(request, ASGIRequest) and isinstance(response, WhiteNoiseFileResponse):
            response.streaming_content = in_chunks(response.streaming_content)
        return response
