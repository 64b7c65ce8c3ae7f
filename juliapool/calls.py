"""What a pool and the pool server's client share: `execute` and `execute_async` on top of their
own `run` and `run_async`, and a call's limits from the per-call arguments and the defaults."""

from __future__ import annotations

from typing import Optional

from .execution import Limits, OutputCallback
from .result import CodeExecResult, ExecReply


class PoolCalls:
    """Mixed into JuliaProcessPool and PoolClient, which set the defaults `timeout`,
    `interrupt_grace`, `memory_limit_mb` and `output_limit_bytes` and define `run` / `run_async`."""

    timeout: Optional[float]
    interrupt_grace: float
    memory_limit_mb: Optional[float]
    output_limit_bytes: Optional[int]

    def execute(self, code: str, timeout: Optional[float] = None, *, on_output: Optional[OutputCallback] = None,
                memory_limit_mb: Optional[float] = None, output_limit_bytes: Optional[int] = None) -> CodeExecResult:
        """Run `code` in a fresh module on a free worker. `on_output(stream, text)` streams output;
        the limits default to the pool's."""
        return self.run(code, timeout, on_output=on_output, memory_limit_mb=memory_limit_mb,
                        output_limit_bytes=output_limit_bytes).to_result()

    async def execute_async(self, code: str, timeout: Optional[float] = None, *,
                            on_output: Optional[OutputCallback] = None, memory_limit_mb: Optional[float] = None,
                            output_limit_bytes: Optional[int] = None) -> CodeExecResult:
        """`execute` for asyncio: waiting for a worker and for its reply are awaited, no thread each."""
        reply = await self.run_async(code, timeout, on_output=on_output, memory_limit_mb=memory_limit_mb,
                                     output_limit_bytes=output_limit_bytes)
        return reply.to_result()

    def run(self, code: str, timeout: Optional[float] = None, *, on_output: Optional[OutputCallback] = None,
            memory_limit_mb: Optional[float] = None, output_limit_bytes: Optional[int] = None) -> ExecReply:
        raise NotImplementedError

    async def run_async(self, code: str, timeout: Optional[float] = None, *,
                        on_output: Optional[OutputCallback] = None, memory_limit_mb: Optional[float] = None,
                        output_limit_bytes: Optional[int] = None) -> ExecReply:
        raise NotImplementedError

    def limits(self, timeout: Optional[float] = None, memory_limit_mb: Optional[float] = None,
               output_limit_bytes: Optional[int] = None) -> Limits:
        """A call's limits: its own, else the defaults. A timeout of 0 or less means none."""
        t = self.timeout if timeout is None else timeout
        mb = self.memory_limit_mb if memory_limit_mb is None else memory_limit_mb
        out = self.output_limit_bytes if output_limit_bytes is None else output_limit_bytes
        return Limits(t if t and t > 0 else None, self.interrupt_grace, out or None,
                      int(mb * 2**20) if mb else None)
