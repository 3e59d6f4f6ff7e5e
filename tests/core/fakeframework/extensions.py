"""Classes a user imports later, deriving from the patched base class without overriding its methods."""

from __future__ import annotations

from fakeframework.models import Base


class Extension(Base):
    pass
