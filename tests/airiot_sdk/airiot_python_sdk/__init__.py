"""Stand-in for the vendor SDK package (tests only). Like the real one, importing it
configures logging at DEBUG on stderr."""

import logging

logging.basicConfig(level=logging.DEBUG)
