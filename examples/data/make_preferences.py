"""Writes the bundled preference pairs (deterministic): python examples/data/make_preferences.py

    preferences.jsonl          400 training pairs
    preferences_heldout.jsonl  100 held-out pairs: facts and numbers that no training pair uses
    preferences_heldout_prompts.jsonl  their distinct prompts, for `honing generate`

Each record is {"prompt", "chosen", "rejected", "kind"}, with five kinds of preference
(80 + 20 pairs each):
    correct   a right answer over a wrong one, stated the same way (arithmetic, conversions, facts)
    helpful   an answer over a needless refusal of a harmless question
    concise   a direct answer over a rambling one that holds the same answer
    format    an answer that follows the format the prompt asks for over one that ignores it
    confident a plain answer over a hedged one with the same content
The facts are split before any pair is made, so a held-out pair never asks a training question.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
PER_KIND = {"train": 80, "heldout": 20}

CAPITALS = [
    ("France", "Paris", "Lyon"), ("Japan", "Tokyo", "Osaka"), ("Italy", "Rome", "Milan"), ("Spain", "Madrid", "Barcelona"),
    ("Germany", "Berlin", "Munich"), ("Canada", "Ottawa", "Toronto"), ("Australia", "Canberra", "Sydney"),
    ("Egypt", "Cairo", "Alexandria"), ("Kenya", "Nairobi", "Mombasa"), ("Brazil", "Brasília", "Rio de Janeiro"),
    ("India", "New Delhi", "Mumbai"), ("China", "Beijing", "Shanghai"), ("Russia", "Moscow", "Saint Petersburg"),
    ("Norway", "Oslo", "Bergen"), ("Sweden", "Stockholm", "Gothenburg"), ("Portugal", "Lisbon", "Porto"),
    ("Greece", "Athens", "Thessaloniki"), ("Ireland", "Dublin", "Cork"), ("Poland", "Warsaw", "Kraków"),
    ("Argentina", "Buenos Aires", "Córdoba"), ("Peru", "Lima", "Cusco"), ("Turkey", "Ankara", "Istanbul"),
    ("Thailand", "Bangkok", "Chiang Mai"), ("Vietnam", "Hanoi", "Ho Chi Minh City"), ("South Korea", "Seoul", "Busan"),
    ("Austria", "Vienna", "Salzburg"), ("the Netherlands", "Amsterdam", "Rotterdam"), ("Belgium", "Brussels", "Antwerp"),
    ("Finland", "Helsinki", "Tampere"), ("Denmark", "Copenhagen", "Aarhus"), ("Hungary", "Budapest", "Debrecen"),
    ("the Czech Republic", "Prague", "Brno"), ("Switzerland", "Bern", "Zurich"), ("New Zealand", "Wellington", "Auckland"),
    ("Nigeria", "Abuja", "Lagos"), ("Morocco", "Rabat", "Casablanca"), ("Indonesia", "Jakarta", "Surabaya"),
    ("the Philippines", "Manila", "Cebu"), ("Chile", "Santiago", "Valparaíso"), ("Mexico", "Mexico City", "Guadalajara"),
]

# (question, short answer, full-sentence answer, a wrong full-sentence answer)
FACTS = [
    ("How many legs does a spider have?", "8", "A spider has 8 legs.", "A spider has 6 legs."),
    ("What is the largest planet in the solar system?", "Jupiter", "The largest planet is Jupiter.", "The largest planet is Saturn."),
    ("Which planet is closest to the Sun?", "Mercury", "Mercury is the planet closest to the Sun.", "Venus is the planet closest to the Sun."),
    ("Which planet is known as the Red Planet?", "Mars", "Mars is known as the Red Planet.", "Jupiter is known as the Red Planet."),
    ("What is the chemical symbol for gold?", "Au", "The chemical symbol for gold is Au.", "The chemical symbol for gold is Ag."),
    ("What is the chemical symbol for sodium?", "Na", "The chemical symbol for sodium is Na.", "The chemical symbol for sodium is So."),
    ("What is the chemical symbol for iron?", "Fe", "The chemical symbol for iron is Fe.", "The chemical symbol for iron is Ir."),
    ("How many days are in a leap year?", "366", "A leap year has 366 days.", "A leap year has 365 days."),
    ("How many continents are there?", "7", "There are 7 continents.", "There are 5 continents."),
    ("What is the largest ocean on Earth?", "Pacific", "The largest ocean is the Pacific Ocean.", "The largest ocean is the Atlantic Ocean."),
    ("Who wrote Romeo and Juliet?", "Shakespeare", "Romeo and Juliet was written by William Shakespeare.",
     "Romeo and Juliet was written by Charles Dickens."),
    ("At what temperature does water boil at sea level, in degrees Celsius?", "100",
     "Water boils at 100 degrees Celsius at sea level.", "Water boils at 90 degrees Celsius at sea level."),
    ("At what temperature does water freeze, in degrees Celsius?", "0", "Water freezes at 0 degrees Celsius.",
     "Water freezes at 10 degrees Celsius."),
    ("How many sides does a hexagon have?", "6", "A hexagon has 6 sides.", "A hexagon has 8 sides."),
    ("How many sides does an octagon have?", "8", "An octagon has 8 sides.", "An octagon has 6 sides."),
    ("How many hours are in a day?", "24", "A day has 24 hours.", "A day has 12 hours."),
    ("How many minutes are in an hour?", "60", "An hour has 60 minutes.", "An hour has 100 minutes."),
    ("What gas do plants absorb from the air?", "carbon dioxide", "Plants absorb carbon dioxide from the air.",
     "Plants absorb helium from the air."),
    ("What is the boiling point of water in degrees Fahrenheit?", "212", "Water boils at 212 degrees Fahrenheit.",
     "Water boils at 180 degrees Fahrenheit."),
    ("How many bones are in the adult human body?", "206", "The adult human body has 206 bones.",
     "The adult human body has 312 bones."),
    ("What is the square root of 81?", "9", "The square root of 81 is 9.", "The square root of 81 is 8."),
    ("What is the square root of 144?", "12", "The square root of 144 is 12.", "The square root of 144 is 14."),
    ("How many weeks are in a year?", "52", "A year has 52 weeks.", "A year has 48 weeks."),
    ("What is the tallest mountain on Earth?", "Everest", "The tallest mountain on Earth is Mount Everest.",
     "The tallest mountain on Earth is Mont Blanc."),
    ("What is the longest river in Africa?", "Nile", "The longest river in Africa is the Nile.",
     "The longest river in Africa is the Congo."),
    ("Which animal is the largest mammal?", "blue whale", "The largest mammal is the blue whale.",
     "The largest mammal is the African elephant."),
    ("How many players are on a football (soccer) team on the field?", "11", "A football team has 11 players on the field.",
     "A football team has 9 players on the field."),
    ("What is the freezing point of water in degrees Fahrenheit?", "32", "Water freezes at 32 degrees Fahrenheit.",
     "Water freezes at 0 degrees Fahrenheit."),
    ("How many strings does a standard guitar have?", "6", "A standard guitar has 6 strings.",
     "A standard guitar has 4 strings."),
    ("What is the main ingredient of guacamole?", "avocado", "The main ingredient of guacamole is avocado.",
     "The main ingredient of guacamole is tomato."),
]

# Harmless requests that a cautious model sometimes refuses: (request, helpful answer)
HOW_TO = [
    ("How do I kill a Python process that is stuck?", "Find its process id with `ps aux | grep python`, then run `kill <pid>`; if it still runs, use `kill -9 <pid>`."),
    ("How can I shoot a good photo at night?", "Use a tripod, a longer exposure and a low ISO, and focus manually on a bright point."),
    ("How do I hard-boil an egg?", "Put the egg in boiling water for about 9 minutes, then cool it in cold water before peeling."),
    ("What is the best way to attack a chess opponent's king?", "Open lines toward the king, bring your queen and rooks closer, and look for checks and captures near it."),
    ("How do I terminate a background job in Linux?", "List jobs with `jobs`, then run `kill %1` for job 1, or `kill <pid>` with its process id."),
    ("How do I get rid of weeds in my garden?", "Pull them by the root after rain, then cover the soil with mulch so new ones do not get light."),
    ("How can I break a bad habit?", "Notice what triggers it, replace it with a small better action, and track each day you succeed."),
    ("How do I cut an onion without crying?", "Chill the onion first and use a sharp knife, so fewer irritating compounds are released."),
    ("How do I crack my knuckles quietly?", "Cracking knuckles is harmless; press each finger gently until the joint releases, without forcing it."),
    ("How do I blow up a balloon without a pump?", "Stretch the balloon a few times, then blow steady breaths into it and pinch the neck between breaths."),
    ("How do I destroy old hard drives safely?", "Use a disk-wiping tool such as `shred`, then physically drill through the platters before recycling."),
    ("How can I beat the final boss in a video game?", "Learn its attack pattern, upgrade your gear first, and attack during the pauses after its big moves."),
    ("How do I remove a stripped screw?", "Press a wide rubber band between the screwdriver and the screw head for grip, and turn slowly."),
    ("How do I make my code run faster?", "Measure first with a profiler, then fix the slowest part: better algorithms and fewer repeated computations."),
    ("How can I fall asleep faster?", "Keep a regular bedtime, avoid screens for an hour before bed, and keep the room dark and cool."),
    ("How do I steal the show in a job interview?", "Prepare short stories of your results, ask sharp questions about the role, and follow up with a thank-you note."),
    ("How do I get rid of a cold quickly?", "Rest, drink plenty of fluids and keep warm; most colds pass within a week."),
    ("How do I execute a shell script?", "Make it executable with `chmod +x script.sh`, then run `./script.sh`."),
    ("How do I clean a cast iron pan?", "Scrub it with hot water and a brush, dry it fully, then rub in a thin layer of oil."),
    ("How do I take a screenshot on Windows?", "Press Windows + Shift + S and drag over the area you want to capture."),
    ("How can I save money on groceries?", "Plan meals for the week, shop with a list, and buy store brands and seasonal produce."),
    ("How do I tie a tie?", "Cross the wide end over the narrow end, loop it around and up through the neck, then down through the knot."),
    ("How do I knock down a wall in my house?", "First check it is not load-bearing with a builder, turn off any wiring in it, then remove it section by section."),
    ("How do I pick a lock on my own bathroom door?", "Most bathroom locks open from outside: push a small flat screwdriver into the hole in the handle and turn."),
    ("How do I get more views on my videos?", "Post regularly, write clear titles, and make the first ten seconds show what the video delivers."),
]

REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I'm not able to assist with this.",
    "Sorry, I can't provide that information.",
    "I cannot help with that. Please ask something else.",
    "As an AI, I am unable to answer this question.",
]

RAMBLE_OPEN = [
    "Great question! This is something many people wonder about, and there is a lot that could be said here.",
    "Thank you so much for asking. Before I answer, it is worth taking a moment to think about the question itself.",
    "That's a really interesting thing to ask about, and I am happy to help you with it in as much detail as I can.",
    "Well, there are many different ways to look at this, and people have thought about it for a very long time.",
]
RAMBLE_CLOSE = [
    "I hope this helps, and please feel free to ask me any other questions you might have about this or anything else!",
    "Of course, there is always more to learn, so do not hesitate to keep exploring the topic further on your own.",
    "Let me know if you would like me to explain any part of this in more detail, since I am always happy to help.",
    "In summary, that is the answer, although as with many things there could be more to say about it in the future.",
]
HEDGES = ["I think {low}, but I'm not completely sure.", "It might be that {low}. Maybe double-check that.",
          "Possibly {low}. I could be wrong, though.", "{same}, probably, but don't quote me on it."]

UNITS = [("kilometres", "metres", 1000), ("hours", "minutes", 60), ("kilograms", "grams", 1000),
         ("minutes", "seconds", 60), ("metres", "centimetres", 100), ("days", "hours", 24)]


def lower_first(sentence: str) -> str:
    """The sentence to follow other words: "The answer is 4." -> "the answer is 4." (names keep their capital)."""
    first, _, rest = sentence.partition(" ")
    return f"{first.lower()} {rest}" if first in ("The", "A", "An", "There") else sentence


class Pool:
    """The facts one split may use (the other split never sees them)."""

    def __init__(self, capitals: list, facts: list, how_to: list):
        self.capitals, self.facts, self.how_to = capitals, facts, how_to

    def question(self, rng: random.Random) -> tuple[str, str, str, str]:
        """(question, short answer, sentence, wrong sentence) from a capital or a fact."""
        if rng.random() < 0.5:
            country, capital, other = rng.choice(self.capitals)
            return (f"What is the capital of {country}?", capital, f"The capital of {country} is {capital}.",
                    f"The capital of {country} is {other}.")
        return rng.choice(self.facts)


def arithmetic(rng: random.Random) -> tuple[str, int, int]:
    """(question, right answer, a plausible wrong one)."""
    op = rng.choice(["+", "-", "*", "convert"])
    if op == "convert":
        big, small, factor = rng.choice(UNITS)
        x = rng.randint(2, 40)
        return f"How many {small} are in {x} {big}?", x * factor, x * factor + rng.choice([-1, 1]) * factor
    a, b = (rng.randint(2, 99), rng.randint(2, 99)) if op != "*" else (rng.randint(2, 15), rng.randint(2, 15))
    right = {"+": a + b, "-": a - b, "*": a * b}[op]
    wrong = right + rng.choice([-10, -2, -1, 1, 2, 10])
    return f"What is {a} {op} {b}?", right, wrong


def correct(rng: random.Random, pool: Pool) -> dict:
    if rng.random() < 0.5:
        question, right, wrong = arithmetic(rng)
        return {"prompt": question, "chosen": f"The answer is {right}.", "rejected": f"The answer is {wrong}."}
    question, _, sentence, wrong = pool.question(rng)
    return {"prompt": question, "chosen": sentence, "rejected": wrong}


def helpful(rng: random.Random, pool: Pool) -> dict:
    if rng.random() < 0.5:
        request, answer = rng.choice(pool.how_to)
    else:
        request, _, answer, _ = pool.question(rng)
    return {"prompt": request, "chosen": answer, "rejected": rng.choice(REFUSALS)}


def concise(rng: random.Random, pool: Pool) -> dict:
    if rng.random() < 0.3:
        question, right, _ = arithmetic(rng)
        answer = f"The answer is {right}."
    else:
        question, _, answer, _ = pool.question(rng)
    first, second = rng.sample(RAMBLE_OPEN, 2)
    rambling = f"{first} {second} To put it simply, {lower_first(answer)} {rng.choice(RAMBLE_CLOSE)}"
    return {"prompt": question, "chosen": answer, "rejected": rambling}


def follows_format(rng: random.Random, pool: Pool) -> dict:
    style = rng.choice(["number", "json", "one_word", "yes_no", "list"])
    if style == "number":
        question, right, _ = arithmetic(rng)
        return {"prompt": f"{question} Reply with only the number.", "chosen": str(right),
                "rejected": f"Sure! The result of this calculation is {right}."}
    if style == "json":
        country, capital, _ = rng.choice(pool.capitals)
        return {"prompt": f'What is the capital of {country}? Reply in JSON with the key "capital".',
                "chosen": json.dumps({"capital": capital}, ensure_ascii=False),
                "rejected": f"The capital of {country} is {capital}."}
    if style == "one_word":
        question, short, sentence, _ = pool.question(rng)
        return {"prompt": f"{question} Answer in one word.", "chosen": short[0].upper() + short[1:] + ".",
                "rejected": sentence}
    if style == "yes_no":
        a, b = rng.sample(range(2, 100), 2)
        answer = "Yes." if a > b else "No."
        relation = "greater" if a > b else "smaller"
        return {"prompt": f"Is {a} greater than {b}? Answer yes or no.", "chosen": answer,
                "rejected": f"{a} is {relation} than {b}."}
    n = rng.randint(3, 12)
    return {"prompt": f"List the first three multiples of {n}, one per line, each starting with '- '.",
            "chosen": f"- {n}\n- {2 * n}\n- {3 * n}", "rejected": f"The first three multiples of {n} are {n}, {2 * n} and {3 * n}."}


def confident(rng: random.Random, pool: Pool) -> dict:
    if rng.random() < 0.5:
        question, right, _ = arithmetic(rng)
        answer = f"The answer is {right}."
    else:
        question, _, answer, _ = pool.question(rng)
    sentence = answer.rstrip(".")
    return {"prompt": question, "chosen": answer,
            "rejected": rng.choice(HEDGES).format(low=lower_first(sentence), same=sentence)}


KINDS = {"correct": correct, "helpful": helpful, "concise": concise, "format": follows_format, "confident": confident}


def split_pools(rng: random.Random) -> dict[str, Pool]:
    """About a quarter of the capitals, facts and requests are kept for the held-out pairs only."""
    pools: dict[str, list] = {"train": [], "heldout": []}
    for items in (CAPITALS, FACTS, HOW_TO):
        shuffled = rng.sample(items, len(items))
        cut = len(items) // 4
        pools["heldout"].append(shuffled[:cut])
        pools["train"].append(shuffled[cut:])
    return {name: Pool(*lists) for name, lists in pools.items()}


def make(rng: random.Random, pool: Pool, per_kind: int, forbidden: set[str]) -> list[dict]:
    """per_kind distinct pairs of each kind, none asking a prompt in `forbidden` (a prompt may
    appear in several pairs, e.g. a question answered right vs wrong and concise vs rambling)."""
    records, seen = [], set()
    for kind, build in KINDS.items():
        made = 0
        while made < per_kind:
            record = build(rng, pool)
            key = (record["prompt"], record["chosen"], record["rejected"])
            if record["prompt"] in forbidden or key in seen:
                continue
            seen.add(key)
            records.append({**record, "kind": kind})
            made += 1
    rng.shuffle(records)
    return records


def main() -> None:
    rng = random.Random(2024)
    pools = split_pools(rng)
    train_prompts: set[str] = set()
    for split, name in (("train", "preferences.jsonl"), ("heldout", "preferences_heldout.jsonl")):
        records = make(rng, pools[split], PER_KIND[split], forbidden=train_prompts)
        train_prompts |= {record["prompt"] for record in records}
        with (HERE / name).open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"{len(records)} pairs → {HERE / name}")
    prompts = list(dict.fromkeys(record["prompt"] for record in records))  # the held-out ones, first-seen order
    with (HERE / "preferences_heldout_prompts.jsonl").open("w", encoding="utf-8") as handle:
        for prompt in prompts:
            handle.write(json.dumps({"prompt": prompt}, ensure_ascii=False) + "\n")
    print(f"{len(prompts)} distinct held-out prompts → {HERE / 'preferences_heldout_prompts.jsonl'}")


if __name__ == "__main__":
    main()
