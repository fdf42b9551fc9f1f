"""The SQL pre-filter never drops a match: find() equals the pure matchers run on every entity.

A few hundred random records with awkward values (case, spaces, several values, non-ASCII
letters whose case folding differs between str.lower and re.IGNORECASE, %/_ characters,
malformed dates) are indexed; a reference model built in plain Python files them the same
way, and many random queries must give the same answers through both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from securepacs.index.repository import SqlIndex
from securepacs.model.levels import Level, Root
from securepacs.model.query import Key, Query
from securepacs.model.record import COMPUTED_ATTRIBUTES, LEVEL_ATTRIBUTES, InstanceRecord

NAMES = [
    "Doe^John",
    "DOE^JOHN",
    "doe^jane",
    "Smith^Anna",
    "O'Brien^Sean",
    "Müller^Jürgen",
    "MÜLLER^JÜRGEN",
    "Łukasz^Żółw",
    "\u212aelvin^Kim",  # KELVIN SIGN folds to k
    "\u017fmith^Long",  # LONG S folds with s under re.IGNORECASE
    "\u0130pek^Ayse",
    "ipek^ayse",
    "\u0131pek^Ayse",  # Turkish dotted and dotless I
    "ΣΟΦΙΑ^ΟΔΥΣΣΕΑΣ",
    "σοφια^οδυσσεας",
    "李^雷",
    "Yamada^Tarou=山田^太郎",
    "  Padded^Name  ",
    "Smith\\Jones",
    "100%_Sure^X",
    "",
    "Stra\u00dfe^Y",
]
DATES = [
    "20200101",
    "20200115",
    "20200229",
    "20201231",
    "20210301",
    "19991231",
    "",
    " 20200601 ",
    "2020-01-05",
    "20200101\\20210101",
    "1975",
]
TIMES = ["101500", "10:15:00", "235959.123", "0800", "", "07", "120000\\130000"]
MODALITIES = ["CT", "MR", "US", " CT", "ct", "", "CT\\PT", "SR"]
ACCESSIONS = ["A1", "A2", "a1", "A_1", "A%1", "", "B7", " A1 ", "A1\\A2"]
DESCRIPTIONS = ["CT Chest", "ct chest", "Head*", "Abdomen?", "", "Knee_L", "Knee%L", "Ünterbauch"]
SEXES = ["M", "F", "O", "", "m"]
SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.7",
]

VR = {
    "PatientID": "LO",
    "IssuerOfPatientID": "LO",
    "PatientName": "PN",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "OtherPatientIDs": "LO",
    "StudyInstanceUID": "UI",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "AccessionNumber": "SH",
    "StudyID": "SH",
    "StudyDescription": "LO",
    "ReferringPhysicianName": "PN",
    "SeriesInstanceUID": "UI",
    "Modality": "CS",
    "SeriesNumber": "IS",
    "SeriesDescription": "LO",
    "SeriesDate": "DA",
    "SeriesTime": "TM",
    "BodyPartExamined": "CS",
    "SOPInstanceUID": "UI",
    "SOPClassUID": "UI",
    "InstanceNumber": "IS",
    "ContentDate": "DA",
    "ContentTime": "TM",
    "Rows": "US",
    "Columns": "US",
    "NumberOfFrames": "IS",
    "ModalitiesInStudy": "CS",
    "SOPClassesInStudy": "UI",
    "NumberOfPatientRelatedStudies": "IS",
    "NumberOfPatientRelatedSeries": "IS",
    "NumberOfPatientRelatedInstances": "IS",
    "NumberOfStudyRelatedSeries": "IS",
    "NumberOfStudyRelatedInstances": "IS",
    "NumberOfSeriesRelatedInstances": "IS",
    "PatientComments": "LT",
}
UNIQUE = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


def _maybe_drop(rng: random.Random, values: dict[str, str], keep: set[str]) -> dict[str, str]:
    return {k: v for k, v in values.items() if k in keep or rng.random() > 0.15}


def make_records(rng: random.Random, n: int) -> list[InstanceRecord]:
    patients = [
        {
            "PatientID": f"P{i}" + (" " if i % 5 == 0 else ""),
            "IssuerOfPatientID": rng.choice(["", "", "HOSP_A"]),
            "PatientName": rng.choice(NAMES),
            "PatientBirthDate": rng.choice(DATES),
            "PatientSex": rng.choice(SEXES),
            "OtherPatientIDs": rng.choice(["", "X1", "X1\\X2"]),
        }
        for i in range(14)
    ]
    studies = [
        (
            rng.randrange(len(patients)),
            {
                "StudyInstanceUID": f"1.2.{i}",
                "StudyDate": rng.choice(DATES),
                "StudyTime": rng.choice(TIMES),
                "AccessionNumber": rng.choice(ACCESSIONS),
                "StudyID": rng.choice(["1", "2", "S_1", ""]),
                "StudyDescription": rng.choice(DESCRIPTIONS),
                "ReferringPhysicianName": rng.choice(NAMES),
            },
        )
        for i in range(30)
    ]
    series = [
        (
            rng.randrange(len(studies)),
            {
                "SeriesInstanceUID": f"1.3.{i}",
                "Modality": rng.choice(MODALITIES),
                "SeriesNumber": rng.choice(["1", "2", " 3", "", "x"]),
                "SeriesDescription": rng.choice(DESCRIPTIONS),
                "BodyPartExamined": rng.choice(["CHEST", "HEAD", ""]),
            },
        )
        for i in range(60)
    ]
    records = []
    for i in range(n):
        study_index, series_values = rng.choice(series)
        patient_index, study_values = studies[study_index]
        if rng.random() < 0.05:  # the same study sent with another patient
            patient_index = rng.randrange(len(patients))
        if rng.random() < 0.03:  # the same series sent within another study
            study_values = studies[rng.randrange(len(studies))][1]
        sop = f"1.4.{rng.randrange(int(n * 0.9))}"  # some duplicates
        records.append(
            InstanceRecord(
                values={
                    Level.PATIENT: _maybe_drop(
                        rng, patients[patient_index], {"PatientID", "IssuerOfPatientID"}
                    ),
                    Level.STUDY: _maybe_drop(rng, study_values, {"StudyInstanceUID"}),
                    Level.SERIES: _maybe_drop(rng, series_values, {"SeriesInstanceUID"}),
                    Level.IMAGE: {
                        "SOPInstanceUID": sop,
                        "SOPClassUID": rng.choice(SOP_CLASSES),
                        "InstanceNumber": rng.choice(["1", "2", "10", ""]),
                        "ContentDate": rng.choice(DATES),
                        "Rows": rng.choice(["512", "256"]),
                    },
                },
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                blob_key=f"b/{i}",
                size=10,
            )
        )
    return records


@dataclass
class Entity:
    level: Level
    attrs: dict[str, str]
    parent: Entity | None = None
    children: list[Entity] = field(default_factory=list)


class Reference:
    """The index in plain Python: filing rules of SqlIndex.add, matching by the pure matchers."""

    def __init__(self) -> None:
        self.entities: dict[Level, dict[object, Entity]] = {lv: {} for lv in Level}

    @staticmethod
    def _fill(entity: Entity, values: dict[str, str]) -> None:
        for k, v in values.items():
            if v.strip() and not entity.attrs.get(k, "").strip():
                entity.attrs[k] = v

    def add(self, rec: InstanceRecord) -> None:
        v = rec.values
        sop = v[Level.IMAGE]["SOPInstanceUID"].strip()
        if sop in self.entities[Level.IMAGE]:
            return
        pkey = (
            v[Level.PATIENT].get("PatientID", "").strip(),
            v[Level.PATIENT].get("IssuerOfPatientID", "").strip(),
        )
        st_uid = v[Level.STUDY]["StudyInstanceUID"].strip()
        se_uid = v[Level.SERIES]["SeriesInstanceUID"].strip()
        se = self.entities[Level.SERIES].get(se_uid)
        st = se.parent if se else self.entities[Level.STUDY].get(st_uid)
        pt = st.parent if st else self.entities[Level.PATIENT].get(pkey)
        if pt is None:
            pt = self.entities[Level.PATIENT][pkey] = Entity(Level.PATIENT, dict(v[Level.PATIENT]))
        elif (
            pt.attrs.get("PatientID", "").strip(),
            pt.attrs.get("IssuerOfPatientID", "").strip(),
        ) == pkey:
            self._fill(pt, v[Level.PATIENT])
        if st is None:
            st = Entity(Level.STUDY, dict(v[Level.STUDY]), pt)
            self.entities[Level.STUDY][st_uid] = st
            pt.children.append(st)
        elif st.attrs["StudyInstanceUID"].strip() == st_uid:
            self._fill(st, v[Level.STUDY])
        if se is None:
            se = Entity(Level.SERIES, dict(v[Level.SERIES]), st)
            self.entities[Level.SERIES][se_uid] = se
            st.children.append(se)
        else:
            self._fill(se, v[Level.SERIES])
        im = Entity(Level.IMAGE, dict(v[Level.IMAGE]), se)
        self.entities[Level.IMAGE][sop] = im
        se.children.append(im)

    @staticmethod
    def _below(entity: Entity, level: Level) -> list[Entity]:
        found = [entity]
        while found and found[0].level is not level:
            found = [c for e in found for c in e.children]
        return found

    def _computed(self, e: Entity) -> dict[str, str]:
        if e.level is Level.PATIENT:
            return {
                "NumberOfPatientRelatedStudies": str(len(self._below(e, Level.STUDY))),
                "NumberOfPatientRelatedSeries": str(len(self._below(e, Level.SERIES))),
                "NumberOfPatientRelatedInstances": str(len(self._below(e, Level.IMAGE))),
            }
        if e.level is Level.STUDY:
            mods = {m.strip() for s in e.children for m in s.attrs.get("Modality", "").split("\\")}
            classes = {i.attrs.get("SOPClassUID", "").strip() for i in self._below(e, Level.IMAGE)}
            return {
                "ModalitiesInStudy": "\\".join(sorted(mods - {""})),
                "SOPClassesInStudy": "\\".join(sorted(classes - {""})),
                "NumberOfStudyRelatedSeries": str(len(e.children)),
                "NumberOfStudyRelatedInstances": str(len(self._below(e, Level.IMAGE))),
            }
        if e.level is Level.SERIES:
            return {"NumberOfSeriesRelatedInstances": str(len(e.children))}
        return {}

    def values(self, e: Entity) -> dict[str, str]:
        chain = []
        node: Entity | None = e
        while node is not None:
            chain.append(node)
            node = node.parent
        out: dict[str, str] = {}
        for node in chain:
            out.update({k: node.attrs.get(k, "") for k in LEVEL_ATTRIBUTES[node.level]})
            out.update(self._computed(node))
        return out

    def find(self, query: Query) -> list[dict[str, str]]:
        constraints = query.constraints()
        keys = [k for lv in query.level.at_or_above() for k in LEVEL_ATTRIBUTES[lv]]
        keys += COMPUTED_ATTRIBUTES[query.level]
        out = []
        for e in self.entities[query.level].values():
            vals = self.values(e)
            if all(m.matches(vals.get(k)) for k, m in constraints.items()):
                out.append({k: vals[k] for k in keys})
        return out

    def instances(self, query: Query) -> list[str]:
        matched = {r[UNIQUE[query.level]] for r in self.find(query)}
        return [
            sop
            for e in self.entities[query.level].values()
            if self.values(e)[UNIQUE[query.level]] in matched
            for sop in (i.attrs["SOPInstanceUID"] for i in self._below(e, Level.IMAGE))
        ]


def _mutate(rng: random.Random, value: str) -> str:
    """A wildcard pattern derived from `value`."""
    if not value:
        return rng.choice(["?*", "*a*", "?"])
    chars = list(value)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(chars))
        chars[i] = rng.choice(["?", "*"])
    if rng.random() < 0.3:
        chars = chars[: rng.randrange(len(chars) + 1)] + ["*"]
    text = "".join(chars)
    return text.swapcase() if rng.random() < 0.3 else text


def _value(rng: random.Random, keyword: str, pool: list[str]) -> str:
    vr = VR[keyword]
    seen = rng.choice(pool) if pool else ""
    roll = rng.random()
    if roll < 0.1:
        return ""
    if vr in ("DA", "TM") and roll < 0.55:
        base = DATES if vr == "DA" else TIMES
        low = rng.choice([*base, "", "2020", "1000"]).strip().split("\\")[0].replace("-", "")
        high = rng.choice([*base, "", "20201231", "2359"]).strip().split("\\")[0].replace("-", "")
        return f"{low}-{high}"
    if vr == "UI" and roll < 0.5:
        return "\\".join(rng.sample(pool, min(len(pool), rng.randint(1, 3))) + ["9.9.9"])
    if roll < 0.55:
        return seen.swapcase() if vr == "PN" and rng.random() < 0.5 else seen
    if roll < 0.85:
        parts = seen.split("\\")
        return _mutate(rng, rng.choice(parts))
    return rng.choice(["CT\\MR", "*", "X", "A?", "*\\CT", "ſ*", "\u212a*", "i*", "İ*", "σ*"])


def random_query(rng: random.Random, ref: Reference) -> Query:
    root = rng.choice(list(Root))
    level = rng.choice(root.levels)
    candidates = [k for lv in level.at_or_above() for k in LEVEL_ATTRIBUTES[lv]]
    candidates += [k for lv in level.at_or_above() for k in COMPUTED_ATTRIBUTES[lv]]
    candidates += ["PatientComments", "SOPInstanceUID"]
    keys = []
    for keyword in rng.sample(candidates, rng.randint(1, 3)):
        pool = [
            vals[keyword]
            for e in rng.sample(list(ref.entities[level].values()), 5)
            if keyword in (vals := ref.values(e))
        ]
        keys.append(Key(keyword, VR[keyword], _value(rng, keyword, pool)))
    return Query(root, level, tuple(keys))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[SqlIndex, Reference]:
    rng = random.Random(20240611)
    index = SqlIndex(f"sqlite:///{tmp_path_factory.mktemp('equivalence') / 'index.db'}")
    index.create_schema()
    ref = Reference()
    for rec in make_records(rng, 320):
        index.add(rec)
        ref.add(rec)
    return index, ref


def test_reference_is_filed_like_the_index(indexed: tuple[SqlIndex, Reference]) -> None:
    index, ref = indexed
    for level in Level:
        root = Root.PATIENT if level is Level.PATIENT else Root.STUDY
        assert index.find(Query(root, level, ())) == ref.find(Query(root, level, ()))
    assert index.count_instances() == len(ref.entities[Level.IMAGE])


@pytest.mark.parametrize("seed", range(4))
def test_find_equals_the_pure_matchers(indexed: tuple[SqlIndex, Reference], seed: int) -> None:
    index, ref = indexed
    rng = random.Random(seed)
    nonempty = 0
    for _ in range(150):
        query = random_query(rng, ref)
        try:
            expected = ref.find(query)
        except ValueError:
            continue
        limit = rng.choice([None, None, None, 1, 3])
        assert index.find(query, limit=limit) == expected[:limit], query
        nonempty += bool(expected) and len(expected) < len(ref.entities[query.level])
        if rng.random() < 0.2:
            got = [i.sop_instance_uid for i in index.instances(query)]
            assert sorted(got) == sorted(ref.instances(query)), query
    assert nonempty > 30  # the queries do select something, not all or nothing
