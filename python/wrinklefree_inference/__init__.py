"""Python client for ``dlm_server`` (OpenAI-compatible block-diffusion LM server).

    from wrinklefree_inference.client import BitNetClient
    client = BitNetClient.from_url("http://localhost:30000")
    print(client.chat_openai([{"role": "user", "content": "Hello!"}]))
"""

from .client import (
    BitNetClient,
    DlmClientError,
    DlmConnectionError,
    DlmProtocolError,
    DlmServerError,
    DlmTimeoutError,
)

__all__ = [
    "BitNetClient",
    "DlmClientError",
    "DlmConnectionError",
    "DlmProtocolError",
    "DlmServerError",
    "DlmTimeoutError",
]
__version__ = "0.1.0"
