"""User names made offline, the same list for the same seed.

Machines without internet still need realistic traffic: names that look like the ones
randomuser.me hands out (``silverwolf123``, ``anna.meyer``) and vary in length, so the
store sees the same key shapes it would in production.
"""

from __future__ import annotations

import random


def _words(text: str) -> list[str]:
    return text.split()


ADJECTIVES = _words(
    "happy silver crazy lazy brave quiet angry golden purple orange tiny heavy small big "
    "organic red blue green black white yellow beautiful sad wild lucky clever fuzzy proud "
    "swift calm bold bright dark frozen gentle grumpy jolly mighty noisy rapid shiny sleepy "
    "snappy sunny tidy witty zesty cosmic dusty eager fancy giant humble icy jumpy kind "
    "lively"
)

NOUNS = _words(
    "wolf koala tiger lion bear fish bird cat dog swan goose duck rabbit frog snake panda "
    "zebra monkey leopard gorilla elephant butterfly ladybug peacock owl eagle falcon otter "
    "badger beaver bison camel cobra coyote crane dolphin dragon ferret fox gecko hawk "
    "heron horse jaguar lemur lizard llama lynx moose mouse octopus parrot penguin pony "
    "raven shark sparrow squirrel tortoise turtle walrus whale"
)

FIRST_NAMES = _words(
    "anna ben carla david emma felix greta hugo ida jonas karin leo mia noah olga paul "
    "quinn rosa sam tara ugo vera will xena yusuf zoe liam olivia lucas sofia mateo amelia "
    "elias nora arjun priya kenji yuki omar layla ivan sasha pierre chloe diego lucia sean "
    "aoife lars freya marco giulia"
)

LAST_NAMES = _words(
    "meyer smith garcia muller rossi novak kowalski johansson dubois silva tanaka kim "
    "nguyen patel khan cohen obrien murphy walker young king wright lopez hill scott green "
    "adams baker nelson carter mitchell perez roberts turner phillips campbell parker evans "
    "edwards collins stewart morris rogers reed cook morgan bell"
)


def _one(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.55:  # randomuser.me style: adjective + animal + digits
        return f"{rng.choice(ADJECTIVES)}{rng.choice(NOUNS)}{rng.randint(100, 999)}"
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    if shape < 0.75:
        return f"{first}.{last}"
    if shape < 0.9:
        return f"{first}{last}{rng.randint(1, 99)}"
    return f"{first}_{rng.randint(1970, 2010)}"


def capacity() -> int:
    """How many distinct names the shapes above can make: the most ``generate`` can promise."""
    people = len(FIRST_NAMES) * len(LAST_NAMES)
    return len(ADJECTIVES) * len(NOUNS) * 900 + people * (1 + 99) + len(FIRST_NAMES) * 41


def generate_usernames(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct names, deterministic for ``seed`` (and stable across runs of Python)."""
    if count < 0:
        raise ValueError("count must be zero or more")
    if count > capacity() // 2:
        raise ValueError(f"can make at most {capacity() // 2} distinct names, asked for {count}")
    rng = random.Random(seed)
    names: dict[str, None] = {}
    while len(names) < count:
        names.setdefault(_one(rng), None)
    return list(names)
