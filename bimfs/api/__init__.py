"""bimfs.api: the Bimplus REST client, its token sources, models and errors.

Only ``ApiError`` subclasses leave this package; httpx stays inside it.
"""

from bimfs.api.auth import (
    AuthProvider,
    LegacyLogin,
    OidcRefresh,
    StaticToken,
    load_token_source,
)
from bimfs.api.client import BimplusClient
from bimfs.api.credentials import default_config_dir
from bimfs.api.download import Download
from bimfs.api.errors import (
    ApiError,
    ApiTimeoutError,
    AuthError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    IncompleteBodyError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    ServerError,
    StatusError,
    TooManyRequestsError,
    TransportError,
    UnauthorizedError,
    UploadOutcomeUnknownError,
)
from bimfs.api.models import Attachment, FolderNode, Project, Rights, Team, User
from bimfs.api.multipart import MultipartUpload, SourceChangedError
from bimfs.api.retry import RetryPolicy
from bimfs.config import check_api_url

__all__ = [
    "ApiError",
    "ApiTimeoutError",
    "Attachment",
    "AuthError",
    "AuthProvider",
    "BadRequestError",
    "BimplusClient",
    "ConflictError",
    "Download",
    "FolderNode",
    "ForbiddenError",
    "IncompleteBodyError",
    "LegacyLogin",
    "MultipartUpload",
    "NotFoundError",
    "OidcRefresh",
    "PayloadTooLargeError",
    "Project",
    "ProtocolError",
    "RetryPolicy",
    "Rights",
    "ServerError",
    "SourceChangedError",
    "StaticToken",
    "StatusError",
    "Team",
    "TooManyRequestsError",
    "TransportError",
    "UnauthorizedError",
    "UploadOutcomeUnknownError",
    "User",
    "check_api_url",
    "default_config_dir",
    "load_token_source",
]
