"""Feetech STS/SMS (and SCS) serial bus servos: the packet codec (``protocol``), the
control tables (``tables``) and a byte-for-byte comparison against the vendor SDK
(``sdk_compare``, needs ``pip install feetech-servo-sdk``)."""
from .protocol import FeetechProtocol
from .tables import MODELS, STS3215

__all__ = ["FeetechProtocol", "MODELS", "STS3215"]
