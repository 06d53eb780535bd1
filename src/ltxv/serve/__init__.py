"""The LTX-Video job service: a durable job store (``store``), the one worker loop (``worker``), the OpenAI-compatible
HTTP API (``api``) and its web page (``web/``). Nothing here knows about a device: the worker drives an engine (a
loaded :class:`ltxv.pipelines.generate.Pipeline`, or a fake one in tests) through its step callback."""
