"""Dynamixel Protocol 2.0: the codec (``protocol``), the X-series control tables
(``tables``) and a byte-for-byte check against ROBOTIS' SDK (``sdk_compare``)."""
from .protocol import Dynamixel2Protocol, error_names, hardware_error_names
from .tables import MODELS, XL330_M288, XL430_W250

__all__ = ["Dynamixel2Protocol", "error_names", "hardware_error_names", "MODELS", "XL330_M288", "XL430_W250"]
