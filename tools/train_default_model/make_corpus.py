#!/usr/bin/env python3
"""Writes the training corpus of tandem's built-in default model.

The corpus is made here, from a small grammar of children's stories: a hero
(a child or an animal, with a name), a place, something the hero wants, a
problem, a helper, and an ending. The slots are drawn from a seeded random
generator, so the same seed gives the same corpus byte for byte, and there
are far more stories than the model could memorize (its job is to learn the
grammar, not the texts). Python standard library only.

  python3 make_corpus.py --out corpus.txt --stories 100000 --seed 2026
  python3 make_corpus.py --words            # the corpus's word list, one a line

Stories are separated by a blank line; the trainer puts the model's BOS and
EOS tokens around each one.
"""
import argparse
import random
import re
import sys

GIRLS = ["Lily", "Mia", "Anna", "Sara", "Emma", "Lucy", "Rose", "Ella", "Zoe", "Amy", "Kate", "Nora"]
BOYS = ["Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Tim", "Finn", "Jake", "Noah", "Ollie", "Dan"]
ANIMALS = [("cat", "Tiger"), ("dog", "Spot"), ("bunny", "Hop"), ("bird", "Pip"), ("fox", "Red"),
           ("bear", "Bruno"), ("mouse", "Nibbles"), ("duck", "Daisy"), ("frog", "Ribbit"),
           ("owl", "Hoot"), ("turtle", "Shelly"), ("puppy", "Buddy")]
SIZES = ["little", "small", "happy", "kind", "brave", "curious", "shy", "funny", "clever", "gentle"]
PLACES = ["a small house near the woods", "a big city", "a quiet village", "a farm by the river",
          "a little town by the sea", "a house on a hill", "a cozy cottage", "a busy street",
          "a green valley", "a tall tree in the park"]
LIKES = ["to play in the garden", "to look at the stars", "to draw pictures", "to sing songs",
         "to run in the grass", "to read books", "to build with blocks", "to splash in puddles",
         "to climb trees", "to bake cookies", "to watch the birds", "to dance in the rain"]
WANTS = [("a red kite", "fly"), ("a shiny ball", "kick"), ("a big boat", "sail"),
         ("a new hat", "wear"), ("a pretty flower", "plant"), ("a warm blanket", "share"),
         ("a yellow balloon", "hold"), ("a toy train", "ride"), ("a blue bike", "ride"),
         ("a magic stone", "keep"), ("a little drum", "play"), ("a big cake", "share")]
PLACES_TO_GO = ["the park", "the forest", "the beach", "the lake", "the market", "the hill",
                "the garden", "the river", "the meadow", "the old barn", "the school", "the zoo"]
# Each problem with the ways a helper can solve it, so the help fits the trouble.
PROBLEMS = [
    ("the wind blew it up into a tall tree", ["used a long stick to get it back", "climbed up the tree and brought it down"]),
    ("it fell into the river and floated away", ["jumped into the water and caught it", "ran along the river and picked it up"]),
    ("a big dog ran off with it", ["called the dog and it came back", "ran after the dog and got it back"]),
    ("it rolled down the hill and got lost", ["found it under a bush", "looked behind every tree until they found it"]),
    ("it got stuck behind a heavy rock", ["pushed the rock away", "moved the rock with a strong stick"]),
    ("it broke into two pieces", ["fixed it with some glue", "made it as good as new"]),
    ("it was too high to reach", ["lifted {name} up high", "brought a tall ladder"]),
]
FEELINGS_SAD = ["sad", "worried", "upset", "scared", "unhappy"]
FEELINGS_GLAD = ["happy", "glad", "proud", "thankful", "excited"]
HELPERS = ["mom", "dad", "grandma", "grandpa", "friend", "big brother", "little sister", "teacher"]
OTHER_HELPERS = ["a kind old man", "a friendly bird", "a wise owl", "a friendly frog", "a tall giraffe"]
LESSONS = [
    "that friends help each other",
    "that it is good to share",
    "to be brave when things are hard",
    "to always say thank you",
    "that being kind makes everyone happy",
    "to be careful with the things we love",
    "that asking for help is a good thing",
    "to never give up",
]
ENDINGS = [
    "From that day on, {name} and {helper} were best friends.",
    "{name} said thank you and gave {helper} a big hug.",
    "They went home together and had a warm cup of milk.",
    "That night, {name} went to sleep with a big smile.",
    "And they all lived happily ever after.",
    "The sun came out again, and everyone played until dinner.",
]
OPENINGS = ["Once upon a time", "Once upon a time", "Once upon a time", "One day", "Long ago",
            "A long time ago"]
WEATHER = ["The sun was shining", "The sky was blue", "It was a warm day", "It was a cold morning",
           "The birds were singing", "The wind was soft"]


def hero(rng):
    kind = rng.random()
    adj = rng.choice(SIZES)
    if kind < 0.35:
        return rng.choice(GIRLS), f"a {adj} girl", "she", "her"
    if kind < 0.7:
        return rng.choice(BOYS), f"a {adj} boy", "he", "his"
    animal, name = rng.choice(ANIMALS)
    return name, f"a {adj} {animal}", "he", "his"


def cap(s):
    return s[0].upper() + s[1:]


def story(rng):
    name, who, pron, poss = hero(rng)
    obj, verb = rng.choice(WANTS)
    if rng.random() < 0.7:
        helper = f"{poss} {rng.choice(HELPERS)}"
    else:
        helper = rng.choice(OTHER_HELPERS)
    problem, fixes = rng.choice(PROBLEMS)
    go = rng.choice(PLACES_TO_GO)
    opening = rng.choice(OPENINGS)
    s = []
    if opening == "Once upon a time" and rng.random() < 0.5:
        s.append(f"{opening}, there was {who} named {name}.")
    elif rng.random() < 0.5:
        s.append(f"{opening}, there was {who} named {name} who lived in {rng.choice(PLACES)}.")
    else:
        s.append(f"{opening}, {who} named {name} lived in {rng.choice(PLACES)}.")
    likes = rng.sample(LIKES, 2)
    s.append(f"{cap(pron)} liked {likes[0]}.")
    if rng.random() < 0.5:
        s.append(f"{cap(pron)} also liked {likes[1]}.")
    s.append(f"{rng.choice(WEATHER)}, so {name} went to {go}.")
    s.append(f"At {go}, {name} saw {obj}. {cap(pron)} wanted to {verb} it.")
    if rng.random() < 0.6:
        s.append(f'"This is the best day ever!" said {name}.')
    s.append(f"But then {problem}.")
    s.append(f"{name} was very {rng.choice(FEELINGS_SAD)}.")
    if rng.random() < 0.5:
        s.append(f'"What can I do?" {pron} asked.')
    s.append(f"Then {helper} came by and saw {name}.")
    s.append(f'"Do not worry," said {helper}. "I will help you."')
    s.append(cap(helper) + " " + rng.choice(fixes).format(name=name) + ".")
    s.append(f"{name} felt {rng.choice(FEELINGS_GLAD)} again.")
    if rng.random() < 0.7:
        s.append(f"{cap(pron)} learned {rng.choice(LESSONS)}.")
    s.append(rng.choice(ENDINGS).format(name=name, helper=helper))
    return " ".join(s)


def words():
    """Every word the grammar can write, lower case, from every template."""
    text = []
    for lst in (GIRLS, BOYS, SIZES, PLACES, LIKES, PLACES_TO_GO, FEELINGS_SAD,
                FEELINGS_GLAD, LESSONS, ENDINGS, OPENINGS, WEATHER):
        text += lst
    text += [a for pair in ANIMALS for a in pair] + [w for pair in WANTS for w in pair]
    text += HELPERS + OTHER_HELPERS + [p for p, _ in PROBLEMS] + [f for _, fs in PROBLEMS for f in fs]
    rng = random.Random(0)
    text += [story(rng) for _ in range(20000)]
    found = set()
    for t in text:
        for w in re.findall(r"[A-Za-z]+", t):
            found.add(w.lower())
    found -= {"name", "helper", "obj"}  # template slots
    return sorted(found)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="-")
    p.add_argument("--stories", type=int, default=100000)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--words", action="store_true", help="print the word list instead")
    a = p.parse_args()
    out = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
    if a.words:
        out.write("\n".join(words()) + "\n")
        return
    rng = random.Random(a.seed)
    for _ in range(a.stories):
        out.write(story(rng) + "\n\n")


if __name__ == "__main__":
    main()
