"""Chat and embedding model backends behind two small protocols, addressed by model URIs."""

from slmops.models.base import (
    ChatChunk,
    ChatMessage,
    ChatModel,
    ChatResult,
    Embedder,
    GenerationParams,
    Usage,
)
from slmops.models.loading import load_chat_model, load_embedder
from slmops.models.uri import ModelURI, parse_model_uri

__all__ = [
    "ChatChunk",
    "ChatMessage",
    "ChatModel",
    "ChatResult",
    "Embedder",
    "GenerationParams",
    "ModelURI",
    "Usage",
    "load_chat_model",
    "load_embedder",
    "parse_model_uri",
]
