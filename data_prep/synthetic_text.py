"""The synthetic corpus's sentence generator: a small English grammar over a fixed vocabulary.

Every word is in CMUdict (a test checks it), so the corpus needs no extra lexicon. Sentences
look like ``THE OLD CAPTAIN FOUND A SMALL BOX NEAR THE RIVER`` or
``DID MARY SELL THE BROWN HORSES YESTERDAY``; a generator is a pure function of its
``random.Random``, so a seed fixes every sentence.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# -- vocabulary -----------------------------------------------------------------------------------
ADJECTIVES = """
OLD YOUNG SMALL LARGE BIG LITTLE GREEN RED BLUE BLACK WHITE BROWN YELLOW GREY DARK BRIGHT COLD
WARM HOT QUIET LOUD HAPPY SAD ANGRY TIRED HUNGRY RICH POOR STRONG WEAK TALL SHORT LONG NARROW
WIDE HEAVY EMPTY FULL CLEAN DIRTY FRESH STRANGE GENTLE CLEVER BRAVE PROUD SILENT FAMOUS SIMPLE
SHARP SMOOTH ROUGH SOFT DEEP SWEET BITTER WILD CALM GOLDEN SILVER WOODEN ANCIENT MODERN PRETTY
LAZY BUSY FRIENDLY LONELY NERVOUS CAREFUL CURIOUS GRAND TINY HUGE ROUND SQUARE BROKEN SHINY
""".split()

# (singular, plural)
PEOPLE = [
    ("MAN", "MEN"), ("WOMAN", "WOMEN"), ("CHILD", "CHILDREN"), ("FISHERMAN", "FISHERMEN"),
    ("POLICEMAN", "POLICEMEN"),
] + [(w, w + "S") for w in """
BOY GIRL FARMER TEACHER DOCTOR SAILOR SOLDIER CAPTAIN KING QUEEN MERCHANT BAKER HUNTER STUDENT
NEIGHBOR FRIEND STRANGER GUARD PRIEST WRITER PAINTER SINGER DRIVER NURSE LAWYER JUDGE SERVANT
MOTHER FATHER SISTER BROTHER UNCLE AUNT COUSIN PILOT DANCER MINER TAILOR BANKER SCHOLAR
""".split()] + [("PRINCESS", "PRINCESSES"), ("WITNESS", "WITNESSES")]

ANIMALS = [
    ("WOLF", "WOLVES"), ("MOUSE", "MICE"), ("PONY", "PONIES"), ("SHEEP", "SHEEP"), ("GOOSE", "GEESE"),
    ("FOX", "FOXES"),
] + [(w, w + "S") for w in """
DOG CAT HORSE COW BIRD BEAR RABBIT GOAT PIG DUCK OWL EAGLE DONKEY MONKEY TIGER LION SNAKE CROW
CAMEL
""".split()]

THINGS = [
    ("KNIFE", "KNIVES"), ("LOAF", "LOAVES"), ("LEAF", "LEAVES"), ("BOX", "BOXES"),
    ("BRUSH", "BRUSHES"), ("BRANCH", "BRANCHES"), ("WATCH", "WATCHES"), ("DISH", "DISHES"),
    ("GLASS", "GLASSES"), ("BENCH", "BENCHES"),
] + [(w, w + "S") for w in """
BOOK LETTER BASKET BOTTLE CUP PLATE SPOON CHAIR TABLE DOOR WINDOW KEY COAT HAT SHOE BOAT SHIP
CART WAGON CANDLE LAMP CLOCK RING COIN BAG ROPE STONE APPLE ORANGE SWORD SHIELD MAP PICTURE
BLANKET BUCKET HAMMER NAIL LADDER BELL FLOWER TREE SEED FEATHER SHELL NET PEN PENCIL GIFT
TICKET MIRROR PILLOW JAR KETTLE POT BARREL DRUM VIOLIN GUITAR FLUTE BALL KITE TOY DOLL
NEWSPAPER UMBRELLA JACKET BLOSSOM PUMPKIN TRUMPET SADDLE ENVELOPE CARPET HELMET
""".split()]

PLACES = """
HOUSE GARDEN FOREST RIVER LAKE HILL MOUNTAIN VALLEY VILLAGE TOWN CITY MARKET CHURCH CASTLE
BRIDGE ROAD STREET FIELD FARM BARN KITCHEN ROOM HALL LIBRARY SCHOOL HARBOR STATION SHOP INN
TOWER BEACH ISLAND CAVE WELL GATE WALL YARD COTTAGE PALACE MILL MEADOW ORCHARD CHAPEL MUSEUM
HOSPITAL THEATER FACTORY CORNER CELLAR ATTIC STABLE
""".split()

# (base, past) for verbs that take an object
VERBS_T = [
    ("FIND", "FOUND"), ("SEE", "SAW"), ("TAKE", "TOOK"), ("BRING", "BROUGHT"), ("BUY", "BOUGHT"),
    ("SELL", "SOLD"), ("LOSE", "LOST"), ("HIDE", "HID"), ("BUILD", "BUILT"), ("BREAK", "BROKE"),
    ("THROW", "THREW"), ("CATCH", "CAUGHT"), ("LEAVE", "LEFT"), ("KEEP", "KEPT"), ("SEND", "SENT"),
    ("HOLD", "HELD"), ("DRAW", "DREW"), ("STEAL", "STOLE"), ("FEED", "FED"), ("MEET", "MET"),
    ("TEACH", "TAUGHT"), ("HEAR", "HEARD"), ("FORGET", "FORGOT"), ("CHOOSE", "CHOSE"),
    ("SHAKE", "SHOOK"), ("WAKE", "WOKE"), ("SEEK", "SOUGHT"), ("CARRY", "CARRIED"),
    ("EMPTY", "EMPTIED"), ("BURY", "BURIED"), ("STUDY", "STUDIED"),
] + [(w, w + "ED") for w in """
OPEN WATCH FOLLOW PAINT CLEAN FIX PUSH PULL LIFT VISIT COUNT MISS REMEMBER PACK WASH FILL
HELP CALL THANK WARN GUARD SEARCH TOUCH KICK CHECK POLISH MEND WANT
""".split()] + [(w, w + "D") for w in """
CLOSE CHASE NOTICE ADMIRE LOVE MOVE SAVE CHANGE PLACE PRAISE RESCUE TRADE SQUEEZE
""".split()] + [("DROP", "DROPPED"), ("GRAB", "GRABBED"), ("STOP", "STOPPED"), ("WRAP", "WRAPPED")]

# (base, past) for verbs of motion, followed by a path phrase
VERBS_MOTION = [
    ("RUN", "RAN"), ("RIDE", "RODE"), ("GO", "WENT"), ("SWIM", "SWAM"), ("FLY", "FLEW"),
    ("COME", "CAME"), ("HURRY", "HURRIED"),
] + [(w, w + "ED") for w in "WALK SAIL CLIMB WANDER RETURN DRIFT CRAWL MARCH RUSH TRAVEL LOOK".split()] + [
    ("STROLL", "STROLLED"), ("JOG", "JOGGED"), ("DANCE", "DANCED"), ("MOVE", "MOVED"),
]

PATH_PREPS = "TO TOWARD INTO ACROSS THROUGH AROUND PAST ALONG BEYOND FROM".split()
PLACE_PREPS = "IN NEAR BEHIND BESIDE UNDER ABOVE BELOW INSIDE OUTSIDE BY AT ON OPPOSITE".split()
ADVERBS = """
SLOWLY QUICKLY QUIETLY CAREFULLY SUDDENLY GENTLY HAPPILY SADLY PROUDLY BRAVELY SOFTLY LOUDLY
EAGERLY CALMLY RARELY OFTEN ALWAYS NEVER SOMETIMES FINALLY CLEARLY SILENTLY PATIENTLY BOLDLY
""".split()
NAMES = """
JOHN MARY JAMES ANNA THOMAS EMMA HENRY ALICE GEORGE MARGARET ROBERT ELIZABETH WILLIAM EDWARD
LUCY ARTHUR HELEN WALTER CLARA PETER SARAH DAVID RUTH FRANK GRACE PAUL JANE HARRY KATE SAMUEL
ROSE MARTIN ELLEN OLIVER JULIA DANIEL LAURA CHARLES NANCY MICHAEL
""".split()
NUMBERS = "TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE TWENTY FIFTY".split()
DAYS = "MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY SUNDAY".split()
TIMES_OF_DAY = "MORNING AFTERNOON EVENING".split()
SEASONS = "SPRING SUMMER AUTUMN WINTER".split()
SAY_VERBS = "SAID THOUGHT KNEW HOPED BELIEVED FEARED".split()
SING_DETS = "THE A THIS THAT EVERY HIS HER MY YOUR OUR THEIR ONE".split()
PLUR_DETS = "THE SOME MANY THESE THOSE ALL SEVERAL HIS HER MY YOUR OUR THEIR".split()
# Words used only by the templates below.
FUNCTION_WORDS = """
AN AND BUT THEN WHILE BECAUSE WAS WERE WILL DID WHERE WHY WHEN THERE PLEASE THAT YESTERDAY TODAY
TOMORROW LAST NEXT EARLY LATE VERY QUITE RATHER TOO NOT
""".split()

Noun = tuple[str, str]


def _a_or_an(next_word: str) -> str:
    return "AN" if next_word[0] in "AEIO" else "A"


class SentenceGenerator:
    """Random sentences from a handful of templates; all randomness comes from ``rng``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.templates: list[Callable[[], list[str]]] = [
            self.transitive, self.transitive, self.motion, self.motion, self.description,
            self.reported, self.fronted_time, self.question, self.future, self.existential,
            self.pair, self.imperative,
        ]

    def sentence(self) -> str:
        return " ".join(self.rng.choice(self.templates)())

    # -- phrases ----------------------------------------------------------------------------------
    def pick(self, words: list[str]) -> str:
        return self.rng.choice(words)

    def noun_phrase(self, nouns: list[Noun], plural: bool | None = None) -> list[str]:
        r = self.rng
        plural = r.random() < 0.3 if plural is None else plural
        noun = r.choice(nouns)[1 if plural else 0]
        adj = [r.choice(ADJECTIVES)] if r.random() < 0.5 else []
        if plural:
            det = r.choice(PLUR_DETS + NUMBERS)
        else:
            det = r.choice(SING_DETS)
            if det == "A":
                det = _a_or_an((adj or [noun])[0])
        return [det, *adj, noun]

    def agent(self) -> list[str]:
        """A subject: a name, a person or an animal."""
        r = self.rng.random()
        if r < 0.3:
            return [self.pick(NAMES)]
        return self.noun_phrase(PEOPLE if r < 0.8 else ANIMALS)

    def obj(self) -> list[str]:
        r = self.rng.random()
        nouns = THINGS if r < 0.6 else PEOPLE if r < 0.8 else ANIMALS
        return self.noun_phrase(nouns)

    def place(self) -> list[str]:
        return ["THE", *([self.pick(ADJECTIVES)] if self.rng.random() < 0.3 else []), self.pick(PLACES)]

    def locative(self) -> list[str]:
        return [self.pick(PLACE_PREPS), *self.place()]

    def time(self) -> list[str]:
        r = self.rng.random()
        if r < 0.25:
            return [self.pick(["YESTERDAY", "TODAY", "TOMORROW"])]
        if r < 0.5:
            return ["ON", self.pick(DAYS)]
        if r < 0.75:
            return ["IN", "THE", self.pick(TIMES_OF_DAY)]
        return [self.pick(["LAST", "NEXT", "EARLY", "LATE"]), self.pick(["WEEK", "YEAR", *SEASONS])]

    def maybe(self, p: float, phrase: Callable[[], list[str]]) -> list[str]:
        return phrase() if self.rng.random() < p else []

    def adverb(self) -> list[str]:
        return [self.pick(ADVERBS)]

    # -- templates --------------------------------------------------------------------------------
    def transitive(self) -> list[str]:
        return [*self.agent(), self.pick(VERBS_T)[1], *self.obj(), *self.maybe(0.5, self.locative)]

    def motion(self) -> list[str]:
        return [*self.agent(), self.pick(VERBS_MOTION)[1], *self.maybe(0.4, self.adverb),
                self.pick(PATH_PREPS), *self.place(), *self.maybe(0.3, self.time)]

    def description(self) -> list[str]:
        noun, plural = self.pick(PLACES + [n[0] for n in THINGS]), False
        first = ["THE", noun, "WAS", *self.maybe(0.4, lambda: [self.pick(["VERY", "QUITE", "RATHER", "TOO"])]),
                 self.pick(ADJECTIVES)]
        if self.rng.random() < 0.5:
            return first
        np_ = self.noun_phrase(PEOPLE + ANIMALS + THINGS, plural=plural)
        return [*first, self.pick(["AND", "BUT", "WHILE", "BECAUSE"]), *np_, "WAS",
                *self.maybe(0.3, lambda: ["NOT"]), self.pick(ADJECTIVES)]

    def reported(self) -> list[str]:
        return [self.pick(NAMES), self.pick(SAY_VERBS), "THAT", *self.agent(), self.pick(VERBS_T)[1],
                *self.obj()]

    def fronted_time(self) -> list[str]:
        return [*self.time(), *self.agent(), self.pick(VERBS_T)[1], *self.obj(), *self.maybe(0.3, self.adverb)]

    def question(self) -> list[str]:
        wh = self.maybe(0.4, lambda: [self.pick(["WHERE", "WHY", "WHEN"])])
        return [*wh, "DID", *self.agent(), self.pick(VERBS_T)[0], *self.obj(), *self.maybe(0.4, self.time)]

    def future(self) -> list[str]:
        return [*self.agent(), "WILL", self.pick(VERBS_T)[0], *self.obj(), *self.time()]

    def existential(self) -> list[str]:
        return ["THERE", "WERE", self.pick(NUMBERS), *self.maybe(0.6, lambda: [self.pick(ADJECTIVES)]),
                self.pick(PEOPLE + ANIMALS + THINGS)[1], *self.locative()]

    def pair(self) -> list[str]:
        return [self.pick(NAMES), "AND", self.pick(NAMES), self.pick(VERBS_T)[1], *self.obj(),
                *self.maybe(0.5, self.locative), *self.maybe(0.3, lambda: ["THEN", self.pick(VERBS_MOTION)[1],
                                                                           "TO", *self.place()])]

    def imperative(self) -> list[str]:
        return ["PLEASE", self.pick(VERBS_T)[0], "THE", self.pick(THINGS)[0], *self.locative()]


def vocabulary() -> list[str]:
    """Every word the generator can produce (sorted)."""
    words: set[str] = set(ADJECTIVES + PLACES + PATH_PREPS + PLACE_PREPS + ADVERBS + NAMES + NUMBERS)
    words |= set(DAYS + TIMES_OF_DAY + SEASONS + SAY_VERBS + SING_DETS + PLUR_DETS + FUNCTION_WORDS)
    words |= {"ON", "IN", "TO", "WEEK", "YEAR"}
    for pairs in (PEOPLE, ANIMALS, THINGS, VERBS_T):
        for a, b in pairs:
            words |= {a, b}
    words |= {past for _base, past in VERBS_MOTION}  # motion verbs appear only in the past tense
    return sorted(words)
