"""A generated catalogue of device "features" and the queries that ask for them: the data of the ANALOGUE of
mobile-feature retrieval (papers.md §10: users describe a feature in context — "my screen is too bright at
night" — instead of its short name; a relevance bi-encoder retrieves it).

A feature is a pair (object o, action a) of the word lists below (32 objects × 10 actions = 320 possible; the
catalogue keeps `n` of them, chosen by `catalogue_seed`). Its catalogue entry, the only text a term-frequency search
indexes, is the name "<action> <object>" plus one description "<action synonym 0> the <object synonym 0>. useful
when <object situation 0>.". A query is one of three kinds:

    keyword      two short phrases, either order: the object's and the action's name, the catalogue's synonym
                 or one more synonym ("dark mode turn on", "enable dark theme", "night look switch on")
    paraphrase   other synonyms in a request template ("how do i switch on the night look")
    situation    a context of the object and of the action, no name word ("my eyes hurt at night, i want it
                 working")

Each query has a content key (its kind's choice of phrases, without the template); a feature's train/val/test
queries have disjoint keys. Contextual test queries also hold out a PHRASE: every object has one synonym and one
situation that no training query uses (`split_queries`); val queries are new combinations of training phrases.

`corpus` is the platform's "generic corpus" for stage 1: a feature's name next to descriptions built from ALL its
action synonyms × object synonyms × object situations (the analogue of what a pretrained language model knows about
words). It shows no query template and no action situation; it does pair every action synonym with every object
synonym, so a paraphrase's two phrases co-occur there (held-out ones included: that is the knowledge stage 2 must
keep).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ftcore.seeding import member_generator

# object: (name, synonyms (0 = the catalogue's), situations (0 = the catalogue's))
OBJECTS = [
    ("dark mode", ["dark theme", "night look", "black background"],
     ["my eyes hurt at night", "the screen glares in a dark room", "reading in bed keeps me awake",
      "white pages feel blinding late"]),
    ("screen brightness", ["display light", "backlight level", "panel glow"],
     ["i cannot read outside in the sun", "the display is too dim on the train", "it is blinding in the cinema",
      "the phone lights up the bedroom"]),
    ("wifi", ["wireless network", "internet connection", "hotspot signal"],
     ["web pages will not load at home", "i am at a cafe with free internet", "my data plan is almost used up",
      "the router is in the next room"]),
    ("bluetooth", ["wireless pairing", "headset link", "short range radio"],
     ["my earbuds will not connect", "the car stereo does not see the phone", "i bought a new speaker",
      "my smartwatch lost its link"]),
    ("battery saver", ["power saving", "energy mode", "low power profile"],
     ["the phone dies before evening", "i am on a long hike without a charger", "charge is at ten percent",
      "the battery drains too fast"]),
    ("alarm", ["wake up timer", "morning alert", "ringing clock"],
     ["i keep oversleeping", "i have an early flight", "i need to get up at six",
      "i sleep through my meetings"]),
    ("do not disturb", ["silent hours", "quiet time", "notification pause"],
     ["calls wake me up at night", "i am in an important meeting", "messages keep buzzing during dinner",
      "i want peace while studying"]),
    ("font size", ["text scale", "letter size", "type size"],
     ["the words are too small to read", "my grandmother squints at the messages", "i need glasses for the menu",
      "the labels look tiny"]),
    ("camera flash", ["photo light", "flash lamp", "torch for pictures"],
     ["my pictures come out dark", "i take photos at a night party", "the room is too dim for a snapshot",
      "faces look black in photos"]),
    ("location services", ["gps tracking", "position sharing", "map positioning"],
     ["the map does not know where i am", "i worry apps follow me", "navigation points the wrong way",
      "the weather shows another city"]),
    ("airplane mode", ["flight mode", "offline radio setting", "all radios off"],
     ["the plane is about to take off", "i want no signal at all", "roaming charges abroad scare me",
      "the crew asked to disconnect"]),
    ("ringtone", ["call sound", "ring melody", "incoming call tune"],
     ["i do not hear the phone ring", "everyone has the same melody", "the ring is annoying in the office",
      "i miss calls in my bag"]),
    ("screen lock", ["lock screen", "device passcode", "unlock pattern"],
     ["my kids open my apps", "i left my phone on the bus once", "strangers could read my mail",
      "i worry about theft"]),
    ("fingerprint unlock", ["touch sensor login", "finger scan", "biometric entry"],
     ["typing the pin is slow", "my thumb should open the phone", "i want quick access with one touch",
      "the sensor rejects my finger"]),
    ("storage cleanup", ["free space", "disk cleaner", "junk file removal"],
     ["the phone says memory is full", "i cannot install a new app", "old videos take too much room",
      "photos fail to save"]),
    ("app notifications", ["alerts from apps", "push messages", "banner popups"],
     ["games keep sending me offers", "i miss messages from my boss", "the lock screen is full of banners",
      "shopping apps spam me"]),
    ("mobile data", ["cellular internet", "network data", "carrier connection"],
     ["i have no internet away from home", "my bill shows huge usage", "streaming eats my plan",
      "videos buffer on the road"]),
    ("night light", ["blue light filter", "warm screen tint", "eye comfort shield"],
     ["i cannot fall asleep after using the phone", "the screen looks too blue in the evening",
      "my eyes feel tired after dark", "the cold colours keep me up"]),
    ("auto rotate", ["screen rotation", "orientation switch", "landscape turning"],
     ["the picture flips when i lie down", "videos stay sideways", "the view spins while reading in bed",
      "i want wide pictures for movies"]),
    ("keyboard vibration", ["typing haptics", "key buzz", "touch feedback"],
     ["every keypress buzzes my hand", "i cannot tell if i pressed a key", "the typing feels dead",
      "the buzzing is loud in class"]),
    ("media volume", ["sound level", "music loudness", "speaker volume"],
     ["i cannot hear the video", "the music is too loud on the bus", "songs are quiet with headphones",
      "the movie blasts at night"]),
    ("screen timeout", ["display sleep delay", "auto lock time", "idle screen off"],
     ["the display goes black while i read a recipe", "the phone stays lit in my pocket",
      "i have to tap constantly to keep it awake", "the screen turns off too soon"]),
    ("data saver", ["traffic limiter", "bandwidth reducer", "usage restriction"],
     ["i am close to my monthly limit", "background apps use my plan", "i travel with a small data bundle",
      "the bill surprised me"]),
    ("hotspot", ["tethering", "shared connection", "portable router"],
     ["my laptop has no internet on the train", "a friend needs my connection", "the hotel wifi is broken",
      "i work from a park with my computer"]),
    ("emergency sos", ["panic call", "crisis alert", "urgent help dial"],
     ["i feel unsafe walking home", "i had a car accident", "my parents should be told if i fall",
      "i need quick help in danger"]),
    ("contacts backup", ["address book copy", "phone numbers archive", "people list export"],
     ["i am switching to a new phone", "i lost all my numbers once", "my phone might break soon",
      "i want my friends list on the computer"]),
    ("screenshot", ["screen capture", "display snapshot", "screen grab"],
     ["i want to keep this receipt", "i need to show my friend this chat", "the error message should be saved",
      "i want to save the ticket on screen"]),
    ("voice assistant", ["speech helper", "spoken commands", "talking helper"],
     ["my hands are busy while cooking", "i want to ask questions while driving", "typing is hard for me",
      "i want to set reminders by talking"]),
    ("parental controls", ["child restrictions", "kids limits", "family safety"],
     ["my son plays games all night", "my daughter should not see adult sites", "kids buy things in apps",
      "i want to limit my children"]),
    ("wallpaper", ["background picture", "home image", "desktop photo"],
     ["my home screen looks boring", "i want a photo of my dog behind the icons", "the default picture is ugly",
      "the background should match the season"]),
    ("nfc payments", ["tap to pay", "contactless wallet", "card emulation"],
     ["i forgot my credit card at home", "the shop has a card reader", "i want to pay for the bus with my phone",
      "the till asked me to tap"]),
    ("closed captions", ["subtitles", "on screen text for speech", "live transcription"],
     ["i am hard of hearing", "i watch videos on a noisy train", "the speakers talk too fast",
      "i cannot turn the sound on at work"]),
]

# action: (name, synonyms (0 = the catalogue's), situations)
ACTIONS = [
    ("turn on", ["enable", "switch on", "activate"],
     ["i want it working", "it should start now", "i need it running"]),
    ("turn off", ["disable", "switch off", "deactivate"],
     ["i want it gone", "make it stop", "i do not want it anymore"]),
    ("schedule", ["set a time for", "plan", "automate the timing of"],
     ["only on weekdays would be perfect", "at the same hour every day", "it should happen by itself later"]),
    ("customize", ["personalize", "adjust the style of", "tailor"],
     ["i would like it my own way", "the default does not suit me", "i want it to look different"]),
    ("reset", ["restore defaults of", "clear", "undo changes to"],
     ["i messed it up", "put it back like new", "my changes broke it"]),
    ("increase", ["raise", "boost", "turn up"],
     ["i need more of it", "it is not enough", "make it stronger"]),
    ("decrease", ["lower", "reduce", "turn down"],
     ["i need less of it", "it is too much", "make it weaker"]),
    ("share", ["send", "pass on", "give access to"],
     ["my family should get it too", "i want my friend to have it", "others need it as well"]),
    ("lock", ["protect", "secure", "restrict changes to"],
     ["nobody else should change it", "keep it safe from others", "i want it fixed in place"]),
    ("find", ["locate", "open the page for", "search for"],
     ["i cannot find where it is", "where is it hidden", "i looked everywhere for it"]),
]

KINDS = ("keyword", "paraphrase", "situation")
CONTEXTUAL = ("paraphrase", "situation")
PARAPHRASE_TEMPLATES = ["how do i {a} the {o}", "i want to {a} my {o}", "where can i {a} {o}", "{a} {o} please",
                        "help me {a} the {o}"]
SITUATION_TEMPLATES = ["{so}, {sa}", "{so} and {sa}", "when {so} {sa}", "{sa} because {so}"]
MAX_FEATURES = len(OBJECTS) * len(ACTIONS)


@dataclass(frozen=True)
class Catalogue:
    """`features[i] = (object index, action index)`; `texts[i]` its catalogue entry (name + description)."""
    features: list[tuple[int, int]]
    names: list[str]
    texts: list[str]


@dataclass(frozen=True)
class QuerySplit:
    """Per split (train/val/test): parallel lists of query text, feature index (into the catalogue), kind."""
    text: dict[str, list[str]]
    feature: dict[str, list[int]]
    kind: dict[str, list[str]]


def _pick(n: int, gen: torch.Generator) -> int:
    return int(torch.randint(0, n, (1,), generator=gen))


def build_catalogue(n: int, seed: int) -> Catalogue:
    """`n` features of the 320 (object, action) pairs, chosen and ordered by `seed` (stream "catalogue")."""
    if not 2 <= n <= MAX_FEATURES:
        raise ValueError(f"task.n: must be in [2, {MAX_FEATURES}] (got {n})")
    perm = torch.randperm(MAX_FEATURES, generator=member_generator(seed, "catalogue"))[:n].tolist()
    feats = [(p // len(ACTIONS), p % len(ACTIONS)) for p in perm]
    names = [f"{ACTIONS[a][0]} {OBJECTS[o][0]}" for o, a in feats]
    texts = [f"{name}: {ACTIONS[a][1][0]} the {OBJECTS[o][1][0]}. useful when {OBJECTS[o][2][0]}."
             for name, (o, a) in zip(names, feats)]
    return Catalogue(feats, names, texts)


def candidates(kind: str, o: int, a: int) -> list[tuple[tuple, list[str]]]:
    """Every (content key, [its renderings by template]) of one kind for feature (o, a)."""
    on, osyn, osit = OBJECTS[o]
    an, asyn, asit = ACTIONS[a]
    if kind == "keyword":              # the name, the catalogue's synonym or a first other one, either order
        return [((ko, ka, rev), [f"{wa} {wo}" if rev else f"{wo} {wa}"])
                for ko, wo in enumerate([on, *osyn[:2]]) for ka, wa in enumerate([an, *asyn[:2]]) for rev in (0, 1)]
    if kind == "paraphrase":           # object synonyms the catalogue does not show, in request templates
        return [((ko, ka), [t.format(a=asyn[ka], o=osyn[ko]) for t in PARAPHRASE_TEMPLATES])
                for ko in range(1, len(osyn)) for ka in range(len(asyn))]
    if kind == "situation":            # contexts: the object's (not the catalogue's own) and the action's
        return [((ko, ka), [t.format(so=osit[ko], sa=asit[ka]) for t in SITUATION_TEMPLATES])
                for ko in range(1, len(osit)) for ka in range(len(asit))]
    raise ValueError(f"query kind must be one of {', '.join(KINDS)} (got {kind!r})")


def split_queries(cat: Catalogue, n_val: int, n_test: int, seed: int) -> QuerySplit:
    """Train/val/test queries, fixed by `seed` (stream "queries"), so a teacher and its students share them.

    Contextual kinds (paraphrase, situation): every object has one HELD-OUT phrase (a synonym, a situation; drawn
    per object): test queries use it, no training or val query does (only the pretraining corpus knows it: the
    analogue of a pretrained model's language knowledge meeting a context the fine-tuning data never showed).
    Per feature, `n_test` of its held-out-phrase keys are test; of the other keys, `n_val` are val (new
    combinations of training phrases) and the rest train. Keywords: `n_test` + `n_val` random keys per feature are
    test and val, the rest train. Held-out keys are rendered once (a random template), training keys by every
    template."""
    g = member_generator(seed, "queries")
    held = {"paraphrase": [1 + _pick(len(o[1]) - 1, g) for o in OBJECTS],
            "situation": [1 + _pick(len(o[2]) - 1, g) for o in OBJECTS]}
    out = {s: ([], [], []) for s in ("train", "val", "test")}
    for i, (o, a) in enumerate(cat.features):
        for kind in KINDS:
            cands = candidates(kind, o, a)
            if kind in held:
                new = [c for c in cands if c[0][0] == held[kind][o]]
                old = [c for c in cands if c[0][0] != held[kind][o]]
            else:
                new, old = [], cands
            new = [new[j] for j in torch.randperm(len(new), generator=g).tolist()]
            old = [old[j] for j in torch.randperm(len(old), generator=g).tolist()]
            if kind not in held:
                new, old = old[:n_test], old[n_test:]
            if n_test > len(new) or n_val >= len(old):
                raise ValueError(f"task.n_test: {kind} queries leave too few combinations per feature for n_test="
                                 f"{n_test}, n_val={n_val} ({len(new)} test, {len(old)} other)")
            parts = [("test", new[:n_test]), ("val", old[:n_val]), ("train", old[n_val:])]
            for split, keys in parts:
                for _, renders in keys:
                    for t in renders if split == "train" else [renders[_pick(len(renders), g)]]:
                        out[split][0].append(t)
                        out[split][1].append(i)
                        out[split][2].append(kind)
    return QuerySplit({s: v[0] for s, v in out.items()}, {s: v[1] for s, v in out.items()},
                      {s: v[2] for s, v in out.items()})


def corpus(o: int, a: int) -> list[str]:
    """Every generic-corpus description of feature (o, a): each action synonym × object synonym × situation."""
    osyn, osit, asyn = OBJECTS[o][1], OBJECTS[o][2], ACTIONS[a][1]
    return [f"{sa} the {so}. useful when {si}." for sa in asyn for so in osyn for si in osit]
