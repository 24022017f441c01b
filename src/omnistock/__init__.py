"""omnistock: stock, pricing and orders for multi-brand, multi-market retail."""

__version__ = "0.1.0"
