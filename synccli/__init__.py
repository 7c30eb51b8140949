"""synccli: keep a shop's database in step with Xero, Unleashed or Lightspeed on few API calls."""

__version__ = "0.1.0"
