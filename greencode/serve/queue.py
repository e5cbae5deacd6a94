"""One model, many clients: a single generation thread fed by a fair first-come queue.

torch is not re-entrant on one model, so every request runs in the same worker thread, one at a time,
in arrival order. Only `limit` requests may wait; past that `submit` raises QueueFull (HTTP 429). A
request whose client went away is dropped from the queue, or, while running, cancelled before its
next token, so an abandoned completion never holds the worker.

The worker hands results to the asyncio side with loop.call_soon_threadsafe: ("started", None),
("token", TokenEvent) per token, then ("done", CompletionSummary) or ("error", (status, message)).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from greencode.errors import GreencodeError
from greencode.serve.guard import public_message

log = logging.getLogger("greencode.serve")


class QueueFull(Exception):
    pass


@dataclass
class GenerationJob:
    prompt: str
    options: dict  # keyword arguments of EarlyExitEngine.stream
    policy: Any  # the ExitPolicy this request runs with
    loop: asyncio.AbstractEventLoop
    items: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    completion: Any = None  # the engine's Completion while running
    fim: Any = None  # greencode.decoding.fim.FimPlan of this request
    warnings: list = field(default_factory=list)  # what was changed from the request (e.g. a capped max_new_tokens)

    def deliver(self, kind: str, payload: Any = None) -> None:
        """Thread-safe hand-off to the request's coroutine (dropped if the loop has closed)."""
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, (kind, payload))
        except RuntimeError:
            pass


@dataclass
class QueueStats:
    served: int = 0
    cancelled: int = 0
    rejected: int = 0
    failed: int = 0
    tokens: int = 0


class GenerationQueue:
    def __init__(self, engine, default_policy, limit: int):
        self.engine = engine
        self.default_policy = default_policy
        self.limit = limit
        self.stats = QueueStats()
        self._waiting: collections.deque[GenerationJob] = collections.deque()
        self._running: GenerationJob | None = None
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="greencode-generation", daemon=True)

    # -- the asyncio side ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: GenerationJob) -> None:
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            busy = self._running is not None or bool(self._waiting)
            if busy and len(self._waiting) >= self.limit:
                self.stats.rejected += 1
                raise QueueFull(f"{len(self._waiting)} requests are already waiting (limit {self.limit}); retry later")
            self._waiting.append(job)
            self._lock.notify()

    def cancel(self, job: GenerationJob) -> None:
        """The client went away: drop the job if it waits, stop it before its next token if it runs."""
        with self._lock:
            if job.cancelled.is_set():
                return
            job.cancelled.set()
            if job in self._waiting:
                self._waiting.remove(job)
                self.stats.cancelled += 1
                job.deliver("error", (499, "client disconnected"))  # wakes the request's coroutine
            elif job.completion is not None:
                job.completion.cancel()

    def snapshot(self) -> dict:
        with self._lock:
            return {"running": self._running is not None, "waiting": len(self._waiting), "limit": self.limit,
                    **self.stats.__dict__}

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            for job in self._waiting:
                job.deliver("error", (503, "the server is shutting down"))
            self._waiting.clear()
            if self._running is not None and self._running.completion is not None:
                self._running.completion.cancel()
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the worker thread -----------------------------------------------------------------------

    def _next_job(self) -> GenerationJob | None:
        with self._lock:
            while not self._waiting and not self._stopping:
                self._lock.wait()
            if self._stopping:
                return None
            self._running = self._waiting.popleft()
            return self._running

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running = None

    def _run(self, job: GenerationJob) -> None:
        engine = self.engine
        try:
            completion = engine.stream(job.prompt, job.policy, **job.options)
            with self._lock:
                job.completion = completion
                if job.cancelled.is_set():
                    completion.cancel()
            job.deliver("started")
            for event in completion:
                job.deliver("token", event)
            summary = completion.summary
            with self._lock:
                self.stats.tokens += summary.tokens
                if summary.stop_reason == "cancelled" or job.cancelled.is_set():
                    self.stats.cancelled += 1
                else:
                    self.stats.served += 1
            job.deliver("done", summary)
        except GreencodeError as exc:
            with self._lock:
                self.stats.failed += 1
            job.deliver("error", (422, public_message(str(exc))))  # names, not the server's paths
        except Exception as exc:  # a fault in generation must not kill the worker or leak a traceback
            log.exception("generation failed")
            with self._lock:
                self.stats.failed += 1
            job.deliver("error", (500, f"generation failed: {type(exc).__name__}"))
