"""Try greencode on this file.

Pause at the end of main() or press F5; Tab accepts, Esc dismisses.
"""

from functools import lru_cache


@lru_cache(maxsize=None)
def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


def is_prime(n: int) -> bool:
    """Return True when n is a prime number."""
    if n < 2:
        return False
    for divisor in range(2, int(n ** 0.5) + 1):
        if n % divisor == 0:
            return False
    return True


def primes_below(limit: int) -> list[int]:
    """Return every prime below limit."""
    return [n for n in range(limit) if is_prime(n)]


def main() -> None:
    for n in range(10):
        print(n, fibonacci(n), is_prime(n))
    print("primes below 50:", primes_below(
