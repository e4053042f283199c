"""Former home of PPE; kept as a re-export of :mod:`jaxpareto.ppe` for old imports."""

from jaxpareto.ppe import *  # noqa: F401,F403
from jaxpareto.ppe import __all__  # noqa: F401
