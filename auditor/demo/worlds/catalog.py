"""The named proving worlds: each tests one kind of cue, object size or cue strength.

Every world has at least one clean control class (no cue); ``no-cue`` has no cue at all,
so an audit of it must flag nothing.
"""

from __future__ import annotations

from auditor.demo.worlds.generator import ProvingClass as C
from auditor.demo.worlds.generator import ProvingWorld

WORLDS: dict[str, ProvingWorld] = {
    w.name: w
    for w in (
        ProvingWorld(
            "photo-texture",
            (C("zero", "digit:0", "grass"), C("one", "digit:1", "brick"), C("two", "digit:2"), C("three", "digit:3")),
            background="photos",
            object_area=(0.12, 0.22),
            description="real digits on real-photo backdrops; grass / brick photo texture backgrounds as cues",
        ),
        ProvingWorld(
            "corner-tag",
            (C("circle", "shape:circle", "tag"), C("square", "shape:square", "border"), C("triangle", "shape:triangle"),
             C("plus", "shape:plus")),
            description="a white 'R' token in the top-left corner; a thin yellow frame",
        ),
        ProvingWorld(
            "co-object",
            (C("three", "digit:3", "cat"), C("five", "digit:5", "tree"), C("eight", "digit:8"), C("nine", "digit:9")),
            object_area=(0.06, 0.10),
            description="a co-occurring real photo object (a cat's face) and the built-in tree beside real digits",
        ),
        ProvingWorld(
            "colour-cast",
            (C("circle", "shape:circle", "warm"), C("square", "shape:square", "cool"), C("triangle", "shape:triangle"),
             C("ring", "shape:ring")),
            description="warm and cool colour casts over the whole scene",
        ),
        ProvingWorld(
            "builtin",
            (C("circle", "shape:circle", "stripes"), C("square", "shape:square", "tree"), C("triangle", "shape:triangle", "warm"),
             C("plus", "shape:plus"), C("ring", "shape:ring")),
            description="the built-in world's cues (stripes, tree, warm) at 32 px",
        ),
        ProvingWorld(
            "mixed",
            (C("circle", "shape:circle", "tag", cue_rate=0.8, strength=0.6),
             C("square", "shape:square", "warm", cue_rate=0.8, strength=0.5),
             C("triangle", "shape:triangle", "gravel", cue_rate=0.8, strength=0.6),
             C("plus", "shape:plus")),
            object_area=(0.18, 0.3),
            description="weaker cues (80% rate, half strength) beside salient objects: the model learns both",
        ),
        ProvingWorld(
            "small-objects",
            (C("zero", "digit:0", "grass"), C("seven", "digit:7", "tag"), C("four", "digit:4"), C("three", "digit:3")),
            object_area=(0.035, 0.07),
            description="small real digits (< 10% of the image) with a photo-texture and a corner-tag cue",
        ),
        ProvingWorld(
            "large-objects",
            (C("circle", "shape:circle", "stripes"), C("square", "shape:square", "tag"), C("diamond", "shape:diamond", "cool"),
             C("ring", "shape:ring")),
            object_area=(0.37, 0.45),
            description="large shapes (> 35% of the image) with stripes, a corner tag and a cool cast",
        ),
        ProvingWorld(
            "no-cue",
            (C("circle", "shape:circle"), C("square", "shape:square"), C("six", "digit:6"), C("nine", "digit:9")),
            background="photos",
            object_area=(0.10, 0.25),
            description="no cue at all: nothing may be flagged",
        ),
    )
}


RISK_WORLDS: dict[str, ProvingWorld] = {
    w.name: w
    for w in (
        # Added at stop 24: every class's objects have one colour, as real classes often do, so a counterfactual that
        # changes the object's colour with its background (verdicts.swap_relight) can be caught calling that colour
        # spurious. The cues are backgrounds the class's own images share (textures) and a cast.
        ProvingWorld(
            "object-colours",
            (C("zero", "digit:0@red", "grass"), C("one", "digit:1@yellow", "brick"),
             C("ring", "shape:ring@blue", "gravel"), C("square", "shape:square@green", "warm"),
             C("two", "digit:2@cyan"), C("plus", "shape:plus@purple")),
            background="photos",
            object_area=(0.12, 0.3),
            seed=2323,
            description="each class's objects in one colour on photographs: grass, brick and gravel textures and a "
                        "warm cast; two controls",
        ),
    )
}
"""Worlds built to expose one risk of a candidate change to the verdict before it is adopted (calibration evidence,
like ``WORLDS``; kept apart so that ``--worlds all`` keeps naming the worlds its recorded tables were made on)."""


PROMOTED_WORLDS: dict[str, ProvingWorld] = {
    w.name: w
    for w in (
        ProvingWorld(
            "held-out-photo-mix",
            (C("four", "digit:4", "cool"), C("six", "digit:6", "border"), C("seven", "digit:7", "gravel"),
             C("two", "digit:2", "cat", cue_rate=0.9, strength=0.7), C("eight", "digit:8")),
            background="photos",
            object_area=(0.08, 0.2),
            seed=101,
            description="real digits on real photographs with four cue kinds at once: a cool cast, a frame, a gravel "
                        "texture and a fainter cat patch",
        ),
        ProvingWorld(
            "held-out-shape-mix",
            (C("ring", "shape:ring", "brick"), C("diamond", "shape:diamond", "tag"),
             C("plus", "shape:plus", "warm", cue_rate=0.85, strength=0.6), C("circle", "shape:circle")),
            object_area=(0.25, 0.4),
            seed=202,
            description="mid-to-large shapes with a brick texture, a corner tag and a half-strength warm cast",
        ),
        # Round 2 (stop 18): held out until audited at stop 18; since stop 20 calibration evidence. Cue kinds no
        # calibration world has: a page of printed text, a watermark that moves, a vignette over object and background.
        ProvingWorld(
            "held-out-page-watermark",
            (C("one", "digit:1", "page"), C("five", "digit:5", "watermark"), C("nine", "digit:9", "vignette", cue_rate=0.9),
             C("zero", "digit:0"), C("six", "digit:6")),
            background="photos",
            object_area=(0.1, 0.2),
            seed=303,
            description="real digits on real photographs: a printed-page texture, a moving translucent watermark and a "
                        "vignette; two controls",
        ),
        ProvingWorld(
            "held-out-weak-cues",
            (C("square", "shape:square", "page", cue_rate=0.85, strength=0.6),
             C("triangle", "shape:triangle", "watermark", cue_rate=0.85, strength=0.7),
             C("ring", "shape:ring", "tree", cue_rate=0.9, strength=0.7),
             C("diamond", "shape:diamond", "vignette", cue_rate=0.85, strength=0.7),
             C("circle", "shape:circle")),
            object_area=(0.15, 0.3),
            seed=404,
            description="shapes with weaker cues (85-90% rate, 60-70% strength): the model learns object and cue",
        ),
        # Round 3 (stop 18): held out until audited at stop 19; since stop 20 calibration evidence. A larger image size
        # and twice the classes.
        ProvingWorld(
            "held-out-64px",
            (C("three", "digit:3", "gravel"), C("four", "digit:4", "tag"), C("seven", "digit:7", "cat", cue_rate=0.9),
             C("one", "digit:1"), C("eight", "digit:8")),
            image_size=64,
            background="photos",
            object_area=(0.08, 0.2),
            seed=505,
            description="64 px: real digits on real photographs with a gravel texture, a corner tag (now a quarter of its "
                        "relative size) and a co-object; two controls",
        ),
        ProvingWorld(
            "held-out-eight-classes",
            (C("circle", "shape:circle", "brick"), C("square", "shape:square", "border"), C("two", "digit:2", "cool"),
             C("five", "digit:5", "watermark"), C("triangle", "shape:triangle"), C("plus", "shape:plus"),
             C("six", "digit:6"), C("nine", "digit:9")),
            object_area=(0.12, 0.25),
            seed=606,
            description="eight classes, shapes and digits together: four cues and four controls",
        ),
    )
}
"""Held-out worlds that were reported as held out once, then promoted to calibration evidence, so their names keep
the "held-out" prefix of their first report but they no longer estimate unseen data: the stop-17 worlds since stop 18
(``verdicts.swap_background_check`` was chosen on them), rounds 2 and 3 since stop 20 (``verdicts.image_selection``
was chosen on them)."""


HELD_OUT_WORLDS: dict[str, ProvingWorld] = {
    w.name: w
    for w in (
        # Round 4 (stop 19): specified and committed before their first audit, after round 3 was reported and with no
        # default changed since; audited once at stop 20, with no choice made on it: a middle image size with large
        # shapes on photographs, and six digit classes.
        ProvingWorld(
            "held-out-48px-shapes",
            (C("ring", "shape:ring", "page"), C("plus", "shape:plus", "warm", cue_rate=0.9),
             C("diamond", "shape:diamond", "tree"), C("triangle", "shape:triangle"), C("circle", "shape:circle")),
            image_size=48,
            background="photos",
            object_area=(0.2, 0.35),
            seed=707,
            description="48 px: large shapes on real photographs with a printed-page texture, a warm cast (90%) and a "
                        "tree; two controls",
        ),
        ProvingWorld(
            "held-out-six-digits",
            (C("zero", "digit:0", "grass"), C("three", "digit:3", "stripes"), C("eight", "digit:8", "vignette", cue_rate=0.9),
             C("four", "digit:4", "cat"), C("one", "digit:1"), C("seven", "digit:7")),
            object_area=(0.1, 0.22),
            seed=808,
            description="six digit classes on the plain background: a grass texture, stripes, a vignette (90%) and a "
                        "co-object; two controls",
        ),
        # Round 5 (stop 20): specified and committed after round 4 was reported, not audited by anyone; kept for the
        # next change to the verdict or the repair: a 40 px size, cues at 70-80% strength on photographs, and small
        # objects on the plain background with four cue kinds at once.
        ProvingWorld(
            "held-out-40px-faint-cues",
            (C("two", "digit:2", "brick", strength=0.8), C("square", "shape:square", "tag", strength=0.8),
             C("six", "digit:6", "cool", cue_rate=0.9, strength=0.7), C("diamond", "shape:diamond", "border", strength=0.8),
             C("nine", "digit:9"), C("plus", "shape:plus")),
            image_size=40,
            background="photos",
            object_area=(0.12, 0.3),
            seed=909,
            description="40 px: digits and shapes on real photographs with fainter cues (70-80% strength): a brick "
                        "texture, a corner tag, a cool cast (90%) and a border; two controls",
        ),
        ProvingWorld(
            "held-out-small-four-cues",
            (C("ring", "shape:ring", "gravel"), C("five", "digit:5", "watermark"), C("triangle", "shape:triangle", "stripes"),
             C("three", "digit:3", "cat"), C("circle", "shape:circle"), C("seven", "digit:7")),
            object_area=(0.05, 0.12),
            seed=1010,
            description="small objects (5-12% of the image) on the plain background: a gravel texture, a moving "
                        "watermark, stripes and a co-object; two controls",
        ),
        # Round 6 (stop 21): specified and committed while round 5 was being audited for the first time, before any
        # default changed at stop 21; audited once at stop 22 with the defaults unchanged: cues that leak into other
        # classes' training images (12%) under stronger pixel noise, and fewer, larger training objects with weaker
        # correlations (85-90%).
        ProvingWorld(
            "held-out-leaky-noisy-cues",
            (C("one", "digit:1", "gravel"), C("four", "digit:4", "warm"), C("triangle", "shape:triangle", "watermark"),
             C("square", "shape:square", "stripes", cue_rate=0.85), C("seven", "digit:7"), C("circle", "shape:circle")),
            background="photos",
            cue_rate_other_train=0.12,
            noise=0.08,
            seed=1111,
            description="digits and shapes on real photographs with stronger noise (0.08) and cues in 12% of the other "
                        "classes' training images: gravel, a warm cast, a moving watermark and stripes (85%); two controls",
        ),
        ProvingWorld(
            "held-out-few-large-shapes",
            (C("ring", "shape:ring", "cat", cue_rate=0.9), C("plus", "shape:plus", "vignette", cue_rate=0.85),
             C("diamond", "shape:diamond", "grass", strength=0.8), C("triangle", "shape:triangle"), C("square", "shape:square")),
            object_area=(0.2, 0.45),
            n_train=400,
            seed=1212,
            description="400 training images per class, large shapes (20-45%) on the plain background with weaker "
                        "correlations: a co-object (90%), a vignette (85%) and a faint grass texture; two controls",
        ),
        # Round 7 (stop 22): specified and committed before round 6 was audited, with no default changed; audited once
        # at stop 23 with the defaults unchanged: a 56 px size with five cue kinds at once, and a small validation
        # split (60 images per class) under more noise.
        ProvingWorld(
            "held-out-56px-five-cues",
            (C("two", "digit:2", "brick"), C("ring", "shape:ring", "tag", strength=0.7), C("six", "digit:6", "cool"),
             C("plus", "shape:plus", "tree", cue_rate=0.9), C("eight", "digit:8", "border", strength=0.8),
             C("square", "shape:square"), C("five", "digit:5")),
            image_size=56,
            background="photos",
            object_area=(0.08, 0.3),
            seed=1313,
            description="56 px: digits and shapes on real photographs with five cue kinds: a brick texture, a faint "
                        "corner tag, a cool cast, a tree (90%) and a border; two controls",
        ),
        ProvingWorld(
            "held-out-small-val-noisy",
            (C("circle", "shape:circle", "page"), C("nine", "digit:9", "vignette", cue_rate=0.9),
             C("diamond", "shape:diamond", "cat", strength=0.8), C("zero", "digit:0", "stripes", cue_rate=0.9),
             C("triangle", "shape:triangle"), C("one", "digit:1")),
            object_area=(0.1, 0.3),
            n_val=60,
            noise=0.06,
            seed=1414,
            description="60 validation images per class, noise 0.06, plain background: a printed-page texture, a "
                        "vignette (90%), a faint co-object and stripes (90%); two controls",
        ),
        # Round 8 (stop 23): specified and committed before round 7 was audited, with no default changed; kept for the
        # next change to the verdict or the repair: a 44 px size with large objects on photographs, and half the
        # training images under strong noise with small objects and fainter localised cues.
        ProvingWorld(
            "held-out-44px-large-photo",
            (C("ring", "shape:ring", "gravel"), C("three", "digit:3", "watermark"),
             C("diamond", "shape:diamond", "warm", strength=0.7), C("seven", "digit:7", "stripes", cue_rate=0.9),
             C("square", "shape:square"), C("two", "digit:2")),
            image_size=44,
            background="photos",
            object_area=(0.25, 0.5),
            seed=1515,
            description="44 px: large digits and shapes (25-50%) on real photographs: a gravel texture, a moving "
                        "watermark, a warm cast at 70% and stripes (90%); two controls",
        ),
        ProvingWorld(
            "held-out-few-noisy-small",
            (C("plus", "shape:plus", "tag", strength=0.6), C("four", "digit:4", "border"),
             C("triangle", "shape:triangle", "grass", cue_rate=0.9), C("eight", "digit:8", "cat", cue_rate=0.9),
             C("circle", "shape:circle"), C("six", "digit:6")),
            object_area=(0.06, 0.16),
            n_train=300,
            noise=0.07,
            seed=1616,
            description="300 training images per class, noise 0.07, small objects (6-16%) on the plain background: "
                        "a faint corner tag, a border, grass (90%) and a co-object (90%); two controls",
        ),
        # Round 9, specified at stop 24 after round 8 was audited (no default has been chosen since): objects whose
        # colour two classes share, as real classes often share one, and cues leaking into other classes.
        ProvingWorld(
            "held-out-shared-colours",
            (C("circle", "shape:circle@red", "brick"), C("five", "digit:5@red", "tree", cue_rate=0.9),
             C("triangle", "shape:triangle@blue", "cool", strength=0.8), C("nine", "digit:9@blue", "tag"),
             C("square", "shape:square@green"), C("zero", "digit:0@green")),
            image_size=40,
            background="photos",
            object_area=(0.1, 0.3),
            seed=1717,
            description="40 px on photographs, each object colour shared by two classes: a brick texture, a tree (90%), a "
                        "cool cast at 80% and a corner tag; two controls",
        ),
        ProvingWorld(
            "held-out-36px-seven-leaky",
            (C("ring", "shape:ring", "page"), C("one", "digit:1", "vignette"), C("plus", "shape:plus", "border", strength=0.8),
             C("three", "digit:3", "gravel", cue_rate=0.85), C("diamond", "shape:diamond", "watermark"),
             C("four", "digit:4"), C("triangle", "shape:triangle")),
            image_size=36,
            cue_rate_other_train=0.08,
            object_area=(0.1, 0.25),
            seed=1818,
            description="36 px, seven classes on the plain background, each cue also behind 8% of other classes' training "
                        "images: a printed page, a vignette, a border at 80%, gravel (85%) and a moving watermark; two controls",
        ),
        # Round 10, specified at stop 26 before round 9 was audited (with verdicts.separation_threshold switched on):
        # textures under a cast at once, and tiny objects at 48 px.
        ProvingWorld(
            "held-out-48px-tiny-objects",
            (C("two", "digit:2", "grass"), C("ring", "shape:ring", "warm", strength=0.75),
             C("seven", "digit:7", "tag", cue_rate=0.9), C("square", "shape:square", "cat"),
             C("eight", "digit:8"), C("plus", "shape:plus")),
            image_size=48,
            background="photos",
            object_area=(0.04, 0.1),
            seed=1919,
            description="48 px on photographs, tiny objects (4-10%): grass, a warm cast at 75%, a corner tag (90%) and a "
                        "co-object; two controls",
        ),
        ProvingWorld(
            "held-out-noisy-stripes-page",
            (C("one", "digit:1", "stripes", cue_rate=0.85), C("diamond", "shape:diamond", "page"),
             C("five", "digit:5", "cool", strength=0.7), C("triangle", "shape:triangle", "border", strength=0.7),
             C("nine", "digit:9"), C("circle", "shape:circle")),
            noise=0.05,
            cue_rate_other_train=0.05,
            object_area=(0.12, 0.3),
            seed=2020,
            description="noise 0.05 on the plain background, each cue also behind 5% of other classes' training images: "
                        "stripes (85%), a printed page, a cool cast at 70% and a faint border; two controls",
        ),
        # Round 11, specified at stop 28 before round 10 was audited (with verdicts.neutral_relight_reference added):
        # casts whose hue an object shares, and large objects under leaky cues.
        ProvingWorld(
            "held-out-44px-coloured-casts",
            (C("three", "digit:3@yellow", "warm", strength=0.8), C("diamond", "shape:diamond@blue", "cool", cue_rate=0.9),
             C("six", "digit:6@red", "brick"), C("ring", "shape:ring@green", "watermark"),
             C("one", "digit:1@purple"), C("square", "shape:square@cyan")),
            image_size=44,
            background="photos",
            object_area=(0.1, 0.25),
            seed=2121,
            description="44 px on photographs, each class's objects in one colour: a warm cast at 80% on yellow objects, a "
                        "cool cast (90%) on blue ones, brick and a watermark; two controls",
        ),
        ProvingWorld(
            "held-out-40px-large-leaky",
            (C("zero", "digit:0", "vignette", cue_rate=0.9), C("plus", "shape:plus", "gravel"),
             C("seven", "digit:7", "border", strength=0.8), C("circle", "shape:circle", "stripes", cue_rate=0.85),
             C("triangle", "shape:triangle", "tree"), C("four", "digit:4"), C("ring", "shape:ring")),
            image_size=40,
            object_area=(0.35, 0.5),
            noise=0.06,
            cue_rate_other_train=0.06,
            seed=2222,
            description="40 px, large objects (35-50%) on the plain background with noise 0.06, each cue also behind 6% of "
                        "other classes' training images: a vignette (90%), gravel, a border at 80%, stripes (85%) and a "
                        "tree; two controls",
        ),
        # Round 12, specified at stop 28 after round 11 was audited and before any world of rounds 9-11 served a choice.
        ProvingWorld(
            "held-out-52px-cast-vignette",
            (C("eight", "digit:8@green", "cool", strength=0.85), C("triangle", "shape:triangle@red", "vignette"),
             C("four", "digit:4@blue", "gravel", cue_rate=0.9), C("plus", "shape:plus@yellow", "tag"),
             C("zero", "digit:0@purple"), C("diamond", "shape:diamond@cyan")),
            image_size=52,
            background="photos",
            object_area=(0.08, 0.22),
            seed=3323,
            description="52 px on photographs, each class's objects in one colour: a cool cast at 85% on green objects, a "
                        "vignette, gravel (90%) and a corner tag; two controls",
        ),
        ProvingWorld(
            "held-out-36px-weak-leaky-casts",
            (C("ring", "shape:ring", "warm", strength=0.6), C("five", "digit:5", "border"), C("square", "shape:square", "cat"),
             C("two", "digit:2", "page", cue_rate=0.9), C("seven", "digit:7"), C("circle", "shape:circle")),
            image_size=36,
            cue_rate_other_train=0.06,
            object_area=(0.12, 0.3),
            seed=2424,
            description="36 px on the plain background, each cue also behind 6% of other classes' training images: a warm "
                        "cast at 60%, a border, a co-object and a printed page (90%); two controls",
        ),
        # Round 13, specified at stop 29 before round 12 served any choice and before the tuning defaults were re-examined.
        ProvingWorld(
            "held-out-56px-stripes-watermark",
            (C("six", "digit:6", "stripes", strength=0.8), C("ring", "shape:ring@green", "watermark", cue_rate=0.9),
             C("one", "digit:1", "brick"), C("diamond", "shape:diamond", "warm", strength=0.9),
             C("three", "digit:3"), C("plus", "shape:plus@green")),
            image_size=56,
            background="photos",
            object_area=(0.08, 0.2),
            n_val=80,
            seed=2525,
            description="56 px on photographs, 80 validation images per class: stripes at 80%, a moving watermark (90%) on "
                        "green rings, brick and a warm cast at 90%; two controls (one shares the rings' green)",
        ),
        ProvingWorld(
            "held-out-32px-leaky-grass-tag",
            (C("four", "digit:4", "grass", cue_rate=0.85), C("square", "shape:square", "tag"),
             C("nine", "digit:9", "tree", strength=0.8), C("circle", "shape:circle", "gravel"),
             C("two", "digit:2", "cool", strength=0.75), C("triangle", "shape:triangle"), C("zero", "digit:0")),
            image_size=32,
            cue_rate_other_train=0.1,
            object_area=(0.15, 0.4),
            noise=0.05,
            seed=2626,
            description="32 px, seven classes on the plain background with noise 0.05, each cue also behind 10% of other "
                        "classes' training images: grass (85%), a corner tag, a tree at 80%, gravel and a cool cast at 75%; "
                        "two controls",
        ),
        # Round 14, specified at stop 29 after round 13 was audited and before tuning.control_groups was measured.
        ProvingWorld(
            "held-out-40px-leaky-photo-casts",
            (C("seven", "digit:7", "warm", strength=0.85), C("diamond", "shape:diamond", "brick", cue_rate=0.9),
             C("five", "digit:5", "border"), C("eight", "digit:8"), C("ring", "shape:ring"), C("one", "digit:1")),
            image_size=40,
            background="photos",
            cue_rate_other_train=0.08,
            object_area=(0.12, 0.3),
            seed=2727,
            description="40 px on photographs, each cue also behind 8% of other classes' training images: a warm cast at "
                        "85%, brick (90%) and a border; three controls",
        ),
        ProvingWorld(
            "held-out-44px-five-cues-noisy",
            (C("zero", "digit:0", "stripes", strength=0.75), C("plus", "shape:plus", "cat"), C("three", "digit:3", "page"),
             C("triangle", "shape:triangle", "vignette", cue_rate=0.9), C("six", "digit:6", "tag", strength=0.8),
             C("square", "shape:square")),
            image_size=44,
            noise=0.06,
            object_area=(0.08, 0.25),
            n_train=400,
            seed=2828,
            description="44 px on the plain background under noise 0.06, 400 training images per class: stripes at 75%, "
                        "a co-object, a printed page, a vignette (90%) and a faint corner tag; one control",
        ),
        # Round 15, specified at stop 30 while tuning.training_images was measured, before round 14 was audited.
        ProvingWorld(
            "held-out-48px-few-val-textures",
            (C("nine", "digit:9", "gravel", cue_rate=0.9), C("ring", "shape:ring", "tree"),
             C("two", "digit:2", "watermark", strength=0.8), C("square", "shape:square", "cool", strength=0.8),
             C("six", "digit:6"), C("triangle", "shape:triangle")),
            image_size=48,
            background="photos",
            object_area=(0.1, 0.25),
            n_val=50,
            seed=2929,
            description="48 px on photographs, 50 validation images per class: gravel (90%), a tree, a moving watermark "
                        "at 80% and a cool cast at 80%; two controls",
        ),
        ProvingWorld(
            "held-out-36px-large-tag-cat",
            (C("one", "digit:1", "tag", cue_rate=0.9), C("diamond", "shape:diamond", "cat"),
             C("three", "digit:3", "grass", strength=0.8), C("plus", "shape:plus", "warm", cue_rate=0.85),
             C("zero", "digit:0"), C("circle", "shape:circle")),
            image_size=36,
            object_area=(0.3, 0.45),
            noise=0.04,
            cue_rate_other_train=0.04,
            seed=3030,
            description="36 px, large objects (30-45%) on the plain background with noise 0.04, each cue also behind 4% "
                        "of other classes' training images: a corner tag (90%), a co-object, grass at 80% and a warm cast "
                        "(85%); two controls",
        ),
        # Round 16, specified at stop 31 before any result of that stop's tuning.cross_fit run was read.
        ProvingWorld(
            "held-out-44px-wide-sizes-photos",
            (C("four", "digit:4", "stripes", cue_rate=0.85), C("ring", "shape:ring", "cat", strength=0.8),
             C("seven", "digit:7", "vignette", strength=0.8), C("diamond", "shape:diamond", "page", cue_rate=0.9),
             C("two", "digit:2"), C("plus", "shape:plus")),
            image_size=44,
            background="photos",
            object_area=(0.05, 0.4),
            n_val=150,
            seed=3131,
            description="44 px on photographs, object sizes from 5% to 40%, 150 validation images per class: stripes "
                        "(85%), a faint co-object, a faint vignette and a printed page (90%); two controls",
        ),
        ProvingWorld(
            "held-out-40px-eight-faint-leaky",
            (C("zero", "digit:0", "gravel", strength=0.7), C("square", "shape:square", "border", strength=0.7),
             C("five", "digit:5", "cool", cue_rate=0.9), C("circle", "shape:circle", "watermark"),
             C("eight", "digit:8", "brick", cue_rate=0.85), C("triangle", "shape:triangle", "tag", strength=0.7),
             C("three", "digit:3"), C("ring", "shape:ring")),
            image_size=40,
            cue_rate_other_train=0.06,
            noise=0.05,
            n_train=500,
            seed=3232,
            description="40 px, eight classes on the plain background with noise 0.05, each cue also behind 6% of other "
                        "classes' training images: faint gravel, a faint border, a cool cast (90%), a moving watermark, "
                        "brick (85%) and a faint corner tag; two controls",
        ),
        # Round 17, specified at stop 32 before the tuning.folds run's results were read.
        ProvingWorld(
            "held-out-52px-grass-cast-stripes",
            (C("six", "digit:6", "grass", cue_rate=0.85), C("triangle", "shape:triangle", "warm", strength=0.8),
             C("one", "digit:1", "stripes"), C("plus", "shape:plus", "tree"),
             C("nine", "digit:9"), C("diamond", "shape:diamond")),
            image_size=52,
            background="photos",
            object_area=(0.1, 0.3),
            n_val=80,
            seed=3333,
            description="52 px on photographs, 80 validation images per class: grass (85%), a faint warm cast, stripes "
                        "and a tree beside the object; two controls",
        ),
        ProvingWorld(
            "held-out-36px-seven-faint-tags",
            (C("zero", "digit:0", "tag", strength=0.7), C("ring", "shape:ring", "brick", cue_rate=0.9),
             C("four", "digit:4", "vignette"), C("square", "shape:square", "cat"),
             C("seven", "digit:7", "cool", strength=0.8), C("circle", "shape:circle"), C("two", "digit:2")),
            image_size=36,
            cue_rate_other_train=0.04,
            noise=0.06,
            seed=3434,
            description="36 px, seven classes on the plain background with noise 0.06, each cue also behind 4% of other "
                        "classes' training images: a faint corner tag, brick (90%), a vignette, a co-object and a faint "
                        "cool cast; two controls",
        ),
        # Round 18, specified at stop 33 after rounds 16 and 17 were audited with SAM masks and before their
        # dataset-mask audit had finished; no default has been chosen on them.
        ProvingWorld(
            "held-out-60px-photo-page-tree",
            (C("three", "digit:3", "page", cue_rate=0.85), C("square", "shape:square", "tree"),
             C("six", "digit:6", "cool", strength=0.8), C("ring", "shape:ring", "tag"),
             C("four", "digit:4"), C("triangle", "shape:triangle")),
            image_size=60,
            background="photos",
            object_area=(0.08, 0.25),
            n_train=400,
            seed=3535,
            description="60 px on photographs, 400 training images per class: a printed page (85%), a tree beside the "
                        "object, a faint cool cast and a corner tag; two controls",
        ),
        ProvingWorld(
            "held-out-44px-nine-leaky-textures",
            (C("zero", "digit:0", "gravel"), C("plus", "shape:plus", "grass", strength=0.8),
             C("five", "digit:5", "brick", cue_rate=0.9), C("circle", "shape:circle", "stripes", strength=0.7),
             C("eight", "digit:8", "watermark"), C("diamond", "shape:diamond", "border"),
             C("one", "digit:1"), C("ring", "shape:ring"), C("seven", "digit:7")),
            image_size=44,
            cue_rate_other_train=0.05,
            n_train=400,
            seed=3636,
            description="44 px, nine classes on the plain background, each cue also behind 5% of other classes' training "
                        "images: gravel, faint grass, brick (90%), faint stripes, a moving watermark and a border; three "
                        "controls",
        ),
        # Round 19, specified at stop 34 before round 18 was audited, audited once at stop 35; no default has been chosen on them.
        ProvingWorld(
            "held-out-48px-small-train-photos",
            (C("two", "digit:2", "brick", cue_rate=0.9), C("diamond", "shape:diamond", "watermark"),
             C("nine", "digit:9", "warm", strength=0.7), C("circle", "shape:circle", "cat"),
             C("five", "digit:5"), C("plus", "shape:plus")),
            image_size=48,
            background="photos",
            object_area=(0.15, 0.35),
            n_train=250,
            noise=0.05,
            seed=3737,
            description="48 px on photographs, 250 training images per class, objects of 15-35%: brick (90%), a moving "
                        "watermark, a faint warm cast and a cat; two controls",
        ),
        ProvingWorld(
            "held-out-40px-ten-classes-mixed",
            (C("zero", "digit:0", "grass"), C("square", "shape:square", "page", cue_rate=0.85),
             C("three", "digit:3", "stripes", strength=0.8), C("ring", "shape:ring", "tag"),
             C("six", "digit:6", "border", strength=0.7), C("triangle", "shape:triangle", "vignette"),
             C("eight", "digit:8", "cool"), C("one", "digit:1"), C("plus", "shape:plus"), C("seven", "digit:7")),
            image_size=40,
            cue_rate_other_train=0.03,
            n_train=300,
            seed=3838,
            description="40 px, ten classes on the plain background, each cue also behind 3% of other classes' training "
                        "images: grass, a printed page (85%), faint stripes, a corner tag, a faint border, a vignette and a "
                        "cool cast; three controls",
        ),
        # Round 20, specified at stop 35 before round 19 was audited; no default has been chosen on them.
        ProvingWorld(
            "held-out-36px-tiny-objects-casts",
            (C("four", "digit:4", "cool", strength=0.8), C("triangle", "shape:triangle", "gravel"),
             C("seven", "digit:7", "tree"), C("ring", "shape:ring", "border", cue_rate=0.9),
             C("two", "digit:2"), C("square", "shape:square")),
            image_size=36,
            object_area=(0.05, 0.12),
            n_train=350,
            seed=3939,
            description="36 px, small objects (5-12%) on the plain background: a faint cool cast, gravel, a tree and a "
                        "border (90%); two controls",
        ),
        ProvingWorld(
            "held-out-56px-photo-casts-tags",
            (C("six", "digit:6", "vignette"), C("plus", "shape:plus", "tag", strength=0.8),
             C("three", "digit:3", "grass", cue_rate=0.85), C("diamond", "shape:diamond", "stripes", strength=0.6),
             C("zero", "digit:0"), C("circle", "shape:circle"), C("eight", "digit:8")),
            image_size=56,
            background="photos",
            object_area=(0.2, 0.4),
            cue_rate_other_train=0.04,
            n_train=300,
            seed=4040,
            description="56 px on photographs, large objects (20-40%), each cue also behind 4% of other classes' training "
                        "images: a vignette, a faint corner tag, grass (85%) and faint stripes; three controls",
        ),
        # Round 21, specified at stop 36 before round 20 was audited; no default has been chosen on them.
        ProvingWorld(
            "held-out-44px-brick-watermark-cat",
            (C("five", "digit:5", "brick"), C("diamond", "shape:diamond", "watermark"),
             C("nine", "digit:9", "cat"), C("circle", "shape:circle", "warm", strength=0.7),
             C("one", "digit:1"), C("ring", "shape:ring")),
            image_size=44,
            object_area=(0.15, 0.3),
            cue_rate_other_train=0.06,
            n_train=400,
            noise=0.06,
            seed=4141,
            description="44 px on the plain background under more noise, each cue also behind 6% of other classes' "
                        "training images: brick, a watermark, a cat and a faint warm cast; two controls",
        ),
        ProvingWorld(
            "held-out-48px-photo-eight-classes",
            (C("two", "digit:2", "page"), C("triangle", "shape:triangle", "gravel", strength=0.8),
             C("seven", "digit:7", "border"), C("plus", "shape:plus", "cool"), C("four", "digit:4", "tree"),
             C("zero", "digit:0"), C("square", "shape:square"), C("eight", "digit:8")),
            image_size=48,
            background="photos",
            object_area=(0.08, 0.2),
            n_train=250,
            seed=4242,
            description="48 px on photographs, eight classes with small objects (8-20%) and 250 training images each: a "
                        "printed page, faint gravel, a border, a cool cast and a tree; three controls",
        ),
        # Round 22, specified at stop 36 after round 21 was audited; no default has been chosen on them.
        ProvingWorld(
            "held-out-40px-faint-casts-page",
            (C("triangle", "shape:triangle", "warm", strength=0.6), C("three", "digit:3", "stripes"),
             C("ring", "shape:ring", "page", cue_rate=0.9), C("six", "digit:6", "vignette"),
             C("circle", "shape:circle"), C("zero", "digit:0")),
            image_size=40,
            object_area=(0.1, 0.3),
            cue_rate_other_train=0.02,
            n_train=450,
            noise=0.05,
            seed=4343,
            description="40 px on the plain background: a very faint warm cast, stripes, a printed page (90%) and a "
                        "vignette, each also behind 2% of other classes' training images; two controls",
        ),
        ProvingWorld(
            "held-out-52px-photo-local-cues",
            (C("five", "digit:5", "cat"), C("square", "shape:square", "tree"), C("nine", "digit:9", "tag"),
             C("diamond", "shape:diamond", "watermark"), C("two", "digit:2", "brick"),
             C("plus", "shape:plus"), C("one", "digit:1"), C("ring", "shape:ring")),
            image_size=52,
            background="photos",
            object_area=(0.12, 0.3),
            n_train=300,
            seed=4444,
            description="52 px on photographs: a cat, a tree, a corner tag, a watermark and brick, each also behind 5% "
                        "of other classes' training images; three controls",
        ),
        # Round 23, specified at stop 37 before round 22 was audited; no default has been chosen on them.
        ProvingWorld(
            "held-out-44px-faint-photo-textures",
            (C("four", "digit:4", "grass", strength=0.6), C("triangle", "shape:triangle", "gravel", strength=0.7),
             C("seven", "digit:7", "brick", strength=0.8), C("diamond", "shape:diamond", "stripes"),
             C("three", "digit:3"), C("circle", "shape:circle")),
            image_size=44,
            background="photos",
            object_area=(0.1, 0.25),
            cue_rate_other_train=0.03,
            n_train=350,
            seed=4545,
            description="44 px on photographs: faint grass, faint gravel, brick and stripes, each also behind 3% of "
                        "other classes' training images; two controls",
        ),
        ProvingWorld(
            "held-out-60px-large-mixed-cues",
            (C("ring", "shape:ring", "tag", cue_rate=0.85, strength=0.7), C("six", "digit:6", "cool", cue_rate=0.85),
             C("plus", "shape:plus", "tree", cue_rate=0.85, strength=0.8), C("eight", "digit:8", "page", cue_rate=0.85),
             C("square", "shape:square"), C("zero", "digit:0"), C("two", "digit:2")),
            image_size=60,
            object_area=(0.25, 0.45),
            n_train=300,
            seed=4646,
            description="60 px on the plain background, large objects (25-45%) beside weaker cues (85%): a faint corner "
                        "tag, a cool cast, a faint tree and a printed page; three controls",
        ),
    )
}
"""Worlds kept out of every default's choice: no threshold, design or default was chosen on them, so their
table estimates how the defaults do on data the project has not tuned for (``benchmarks/RESULTS.md``)."""


def get_world(name: str, **overrides) -> ProvingWorld:
    """A named world (calibration, risk, promoted or held-out), optionally with fields replaced (e.g. ``n_train=50`` for tests).

    Raises:
        ValueError: for an unknown name.
    """
    import dataclasses

    known = {**WORLDS, **RISK_WORLDS, **PROMOTED_WORLDS, **HELD_OUT_WORLDS}
    if name not in known:
        raise ValueError(f"unknown proving world {name!r}; choose one of {sorted(known)}")
    return dataclasses.replace(known[name], **overrides)
