"""Registries: functions kept under unique names, big_vision `pp/registry.py` style.

Data ops (`ssl_zoo.data.ops`) and method views (`ssl_zoo.data.views`) each keep one.
"""

__all__ = ["Registry"]


class Registry:
    """Functions registered under unique names, each with a dict of metadata.

    Args:
        kind: what the entries are ("op", "view"), used in error messages.
        hint: appended to the unknown-name error (e.g. what else may be passed).

    Example:
    >>> ops = Registry("op")
    >>> @ops.register("double", cost=1)
    ... def double(x):
    ...     return 2 * x
    >>> ops.get("double")(3), ops.names(), ops.metadata("double")
    (6, ('double',), {'cost': 1})
    """

    def __init__(self, kind, hint=""):
        self.kind = kind
        self.hint = hint
        self._entries = {}  # name -> (fn, metadata); insertion order is listing order

    def register(self, name, fn=None, *, replace=False, **metadata):
        """Register `fn` under `name`; without `fn`, return a decorator that does.

        Args:
            name: a non-empty string.
            fn: the function, or None to use `register(name, ...)` as a decorator.
            replace: allow replacing an entry of the same name (else ValueError).
            **metadata: stored with the entry (see `metadata`).

        Returns:
            `fn` (so a decorated function stays usable by its own name), or the
            decorator when `fn` is None.

        Example:
        >>> r = Registry("op")
        >>> f = r.register("neg", lambda x: -x)
        >>> f(2), r.register("neg", abs, replace=True)(-2)
        (-2, 2)
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}.")

        def add(f):
            if not callable(f):
                raise TypeError(f"{self.kind} {name!r} must be callable, got "
                                f"{type(f).__name__}.")
            if name in self._entries and not replace:
                raise ValueError(f"A {self.kind} named {name!r} is already registered; "
                                 f"pass replace=True to replace it.")
            self._entries[name] = (f, dict(metadata))
            return f

        return add if fn is None else add(fn)

    def unregister(self, name):
        """Remove the entry `name` (unknown names raise like `get`).

        Example:
        >>> r = Registry("op")
        >>> _ = r.register("neg", lambda x: -x)
        >>> r.unregister("neg"); r.names()
        ()
        """
        self._lookup(name)
        del self._entries[name]

    def get(self, name):
        """The function registered as `name`.

        Raises:
            ValueError: for an unknown name; the message lists the registered ones.

        Example:
        >>> Registry("view").get("jigsaw")
        Traceback (most recent call last):
        ...
        ValueError: Unknown view 'jigsaw'; registered views: (none).
        """
        return self._lookup(name)[0]

    def metadata(self, name):
        """A copy of the metadata registered with `name`.

        Example:
        >>> r = Registry("view")
        >>> _ = r.register("id", lambda x, seed=None: x, emits_labels=False)
        >>> r.metadata("id")
        {'emits_labels': False}
        """
        return dict(self._lookup(name)[1])

    def name_of(self, fn):
        """The name `fn` is registered under, or None.

        Example:
        >>> r = Registry("op")
        >>> f = r.register("neg", lambda x: -x)
        >>> r.name_of(f), r.name_of(abs)
        ('neg', None)
        """
        return next((n for n, (f, _) in self._entries.items() if f is fn), None)

    def names(self):
        """Registered names, in registration order (a tuple).

        Example:
        >>> Registry("op").names()
        ()
        """
        return tuple(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def _lookup(self, name):
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(self._entries) or "(none)"
            hint = f" {self.hint}" if self.hint else ""
            raise ValueError(f"Unknown {self.kind} {name!r}; registered {self.kind}s: "
                             f"{known}.{hint}") from None
