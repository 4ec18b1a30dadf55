"""Prometheus metrics in the text exposition format, without a client library: counters, histograms and
gauges read when scraped."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

Labels = tuple[str, ...]


class _Family:
    """Values of one metric, by label values."""

    def __init__(self, name: str, help_text: str, kind: str, label_names: Sequence[str] = ()):
        self.name, self.help_text, self.kind, self.label_names = name, help_text, kind, tuple(label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]

    def labels(self, values: Labels, extra: str = "") -> str:
        pairs = [f'{name}="{_escape(value)}"' for name, value in zip(self.label_names, values)]
        pairs += [extra] if extra else []
        return "{" + ",".join(pairs) + "}" if pairs else ""


class Counter(_Family):
    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()):
        super().__init__(name, help_text, "counter", label_names)
        self.values: dict[Labels, float] = {} if label_names else {(): 0}

    def inc(self, *labels: str, amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def render(self) -> list[str]:
        samples = [f"{self.name}{self.labels(key)} {_number(value)}" for key, value in sorted(self.values.items())]
        return self.header() + samples


class Histogram(_Family):
    def __init__(self, name: str, help_text: str, buckets: Sequence[float], label_names: Sequence[str] = ()):
        super().__init__(name, help_text, "histogram", label_names)
        self.buckets = tuple(buckets)
        self.counts: dict[Labels, list[int]] = {}  # per bucket, then the overflow
        self.sums: dict[Labels, float] = {}
        if not label_names:
            self.counts[()], self.sums[()] = [0] * (len(self.buckets) + 1), 0.0

    def observe(self, value: float, *labels: str) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def render(self) -> list[str]:
        lines = self.header()
        for key, counts in sorted(self.counts.items()):
            total = 0
            for bound, count in zip((*self.buckets, "+Inf"), counts):
                total += count
                bucket = self.labels(key, 'le="' + _number(bound) + '"')
                lines.append(f"{self.name}_bucket{bucket} {total}")
            lines.append(f"{self.name}_sum{self.labels(key)} {_number(self.sums[key])}")
            lines.append(f"{self.name}_count{self.labels(key)} {total}")
        return lines


class Gauge(_Family):
    """A value read when the metrics are scraped."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]):
        super().__init__(name, help_text, "gauge")
        self.read = read

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_number(self.read())}"]


class Metrics:
    """What a server process counts: requests by route and status, their latency, the images per
    model call and the padding added to them; gauges are added by the app."""

    def __init__(self) -> None:
        self.requests = Counter("fastvit_requests_total", "Requests answered, by route and status.",
                                ("route", "status"))
        self.latency = Histogram("fastvit_request_duration_seconds", "Time from a request's arrival to its answer.",
                                 LATENCY_BUCKETS, ("route",))
        self.batch_size = Histogram("fastvit_batch_size", "Images per gathered batch (before padding).", BATCH_BUCKETS)
        self.padded = Counter("fastvit_padded_images_total", "Blank images added to fill model calls to a warmed size.")
        self.calls = Counter("fastvit_model_calls_total", "Model calls, by batch size.", ("batch_size",))
        self.gauges: list[Gauge] = []

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.inc(route, str(status))
        self.latency.observe(seconds, route)

    def observe_batch(self, images: int, calls: list[int]) -> None:
        """A gathered batch of ``images`` run as model calls of the sizes ``calls``."""
        self.batch_size.observe(images)
        self.padded.inc(amount=sum(calls) - images)
        for size in calls:
            self.calls.inc(str(size))

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges.append(Gauge(name, help_text, read))

    def render(self) -> str:
        families = [self.requests, self.latency, self.batch_size, self.padded, self.calls, *self.gauges]
        return "\n".join(line for family in families for line in family.render()) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))
