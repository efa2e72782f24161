"""Clean synthetic rows: lab and exam reports with sub-items, PACS rows, accept/quote records.

Report ``i`` of a hospital-day is drawn from its own stream ``Random(f"{seed}|{org}|{day}|lab|{i}")``,
so it does not depend on the chunk size, on the other reports or on which defects are injected
(defects are applied afterwards, from streams of their own). Row dicts are keyed by the spec's
field names; text values are ``str``, watermark values ``datetime``.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from hurren import spec

from . import catalog
from .pdf import build_pdf
from .people import (
    IMAGING_DEPTS,
    LAB_DEPT,
    ORDERING_DEPTS,
    Department,
    Hospital,
    Patient,
    make_patient,
    make_staff,
)

__all__ = ["HospitalDay", "Report", "Row", "fmt_dt"]

Row = dict[str, Any]
ReportKind = Literal["lab", "exam"]

_PATIENT_POOL = 1_000_000  # registered patients of a hospital; a day's cohort is drawn from them
_CLINICS = tuple(d for d in ORDERING_DEPTS if d.code.startswith("1"))
_WARDS = tuple(d for d in ORDERING_DEPTS if d.code.startswith("2"))
_CHECKUP = next(d for d in ORDERING_DEPTS if d.code == "1511")
_MODALITIES = tuple(catalog.MODALITY_WEIGHTS)
_MODALITY_W = tuple(catalog.MODALITY_WEIGHTS.values())
_PANEL_W = tuple(p.weight for p in catalog.PANELS)


def fmt_dt(dt: datetime) -> str:
    """The spec's ``YYYY-MM-DD hh24:mi:ss``."""
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d} {dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"


def _names(dictionary: str) -> dict[str, str]:
    return dict(spec.dictionary(dictionary).codes)


_SEX = _names("STD_SEX")
_PRIORITY = _names("STD_PRIORITY")
_OBS_TYPE = _names("STD_OBSERVATION_TYPE")
_INTERPRET = _names("STD_OBSERVATION_INTERPRET")
_MODALITY = _names("Modality")
_DETERMINER = _names("STD_SPECIMEN_DETERMINER")


@dataclass
class Report:
    """One report as rows: the master, its sub-items, and (exam) its PACS study."""

    kind: ReportKind
    index: int
    master: Row
    items: list[Row]
    study: Row | None = None  # v_web_jctj
    instances: list[Row] = field(default_factory=list)  # v_web_jcjg
    recognized: tuple[str, ...] = ()  # codes an accept/quote record may refer to

    @property
    def entity(self) -> str:
        return "labmaster" if self.kind == "lab" else "exammaster"

    @property
    def item_entity(self) -> str:
        return "lab_subitem" if self.kind == "lab" else "exam_subitem"

    @property
    def item_key_field(self) -> str:
        return "serial_no" if self.kind == "lab" else "exam_item_code"


class HospitalDay:
    """Everything one hospital needs to draw its reports of one day."""

    def __init__(
        self,
        hospital: Hospital,
        day: date,
        *,
        seed: int,
        lab_reports: int,
        exam_reports: int,
        lab_items: int = 20,
        exam_items: tuple[int, int] = (1, 3),
        pacs_instances: int = 6,
        pdf_kb: float = 2.0,
    ) -> None:
        self.hospital, self.day, self.seed = hospital, day, seed
        self.org = hospital.org_code
        self.lab_reports, self.exam_reports = lab_reports, exam_reports
        self.lab_items, self.exam_items = lab_items, exam_items
        self.pacs_instances, self.pdf_kb = pacs_instances, pdf_kb
        self.staff = make_staff(seed, self.org)
        self.cohort = max(1, int(0.7 * (lab_reports + exam_reports)))
        self._day_start = datetime.combine(day, time())
        self._patients: dict[int, Patient] = {}
        self._visits: dict[int, tuple[str, str, Department]] = {}

    # -- patients and visits ---------------------------------------------------------------
    def patient(self, member: int) -> Patient:
        index = (self.day.toordinal() * 100_003 + member * 7_919) % _PATIENT_POOL
        if index not in self._patients:
            self._patients[index] = make_patient(self.seed, self.org, index, today=self.day)
        return self._patients[index]

    def visit(self, member: int) -> tuple[str, str, Department]:
        """(event_type, event_no, ordering department) of a cohort member's visit that day."""
        if member not in self._visits:
            rng = random.Random(f"{self.seed}|{self.org}|{self.day}|visit|{member}")
            r = rng.random()
            if r < 0.70:
                et, dept = "1", rng.choice(_CLINICS)
                event_no = f"1{self.day:%y%m%d}{member:06d}"
            elif r < 0.95:
                et, dept = "2", rng.choice(_WARDS)
                event_no = f"2{self.patient(member).index:09d}"  # admission number, not per day
            else:
                et, dept = "3", _CHECKUP
                event_no = f"3{self.day:%y%m%d}{member:06d}"
            self._visits[member] = (et, event_no, dept)
        return self._visits[member]

    def at(self, seconds: float) -> datetime:
        return self._day_start + timedelta(seconds=int(seconds))

    def report_form_no(self, kind: ReportKind, i: int) -> str:
        return f"{self.day:%y%m%d}{1 if kind == 'lab' else 2}{i:06d}"

    def rng(self, kind: str, i: int) -> random.Random:
        return random.Random(f"{self.seed}|{self.org}|{self.day}|{kind}|{i}")

    # -- shared master fields ---------------------------------------------------------------
    def _common(self, rng: random.Random, kind: ReportKind, i: int) -> tuple[Row, Patient, Department]:
        member = rng.randrange(self.cohort)
        pat = self.patient(member)
        event_type, event_no, dept = self.visit(member)
        doctor = self.staff.pick(rng, dept)
        prio = "S" if dept.code == "1501" else rng.choices(("R", "S", None), (0.8, 0.1, 0.1))[0]
        apply_no = f"{self.day:%y%m%d}{5 if kind == 'lab' else 6}{i:06d}"
        row: Row = {
            "org_code": self.org,
            "apply_form_no": apply_no if rng.random() < 0.95 else None,
            "report_form_no": self.report_form_no(kind, i),
            "patient_id": pat.patient_id,
            "event_type": event_type,
            "event_no": event_no,
            "id_no": pat.id_no,
            "id_type_code": pat.id_type_code,
            "card_no": pat.card_no,
            "retrieve_date": f"{self.day:%Y-%m-%d}",
            "name": pat.name,
            "sex_code": pat.sex_code,
            "sex_name": _SEX[pat.sex_code],
            "participant_id": doctor.id,
            "participant_name": doctor.name,
            "participant_dept_code": dept.code,
            "participant_dept_name": dept.name,
            "participant_dept_std_code": dept.std_code,
            "participant_dept_std_name": dept.std_name,
            "order_id": apply_no,
            "order_priority": prio,
            "order_priority_name": _PRIORITY[prio] if prio else None,
            "data_status": "1",
        }
        return row, pat, dept

    def pdf_for(self, title: str, master: Row, lines: list[str]) -> str:
        auth = master["authenticator_dtime"]
        head = [
            f"Hospital {self.org}   Report {master['report_form_no']}",
            f"Patient ID {master['patient_id']}   Event {master['event_type']}/{master['event_no']}",
            f"Authenticated {auth}",
            "",
        ]
        created = "D:" + auth.replace("-", "").replace(" ", "").replace(":", "") + "+08'00'"
        pdf = build_pdf(
            title,
            head + lines,
            created=created,
            pad_to=int(self.pdf_kb * 1024),
            pad_seed=f"{self.seed}|{self.org}|{master['report_form_no']}|{auth}",
        )
        return base64.b64encode(pdf).decode("ascii")

    # -- lab -------------------------------------------------------------------------------
    def lab_report(self, i: int, *, auth: datetime | None = None, with_pdf: bool = True) -> Report:
        rng = self.rng("lab", i)
        row, _, _ = self._common(rng, "lab", i)
        t_auth = auth or self.at(rng.uniform(8 * 3600, 23 * 3600))
        t_author = t_auth - timedelta(seconds=rng.randint(5, 600))
        t_perf = max(t_author - timedelta(seconds=rng.randint(1200, 3 * 3600)), self.at(60))
        t_part = max(t_perf - timedelta(seconds=rng.randint(600, 4 * 3600)), self.at(30))
        t_update = t_auth + timedelta(seconds=rng.randint(0, 120))

        n = max(1, min(len(catalog.ANALYTES), round(rng.gauss(self.lab_items, self.lab_items / 4))))
        first = rng.choices(catalog.PANELS, _PANEL_W)[0]
        others = [p for p in catalog.PANELS if p is not first]
        rng.shuffle(others)
        panels, codes = [first], list(first.items)
        for p in others:
            if len(codes) >= n:
                break
            panels.append(p)
            codes += p.items
        codes = codes[:n]
        panels = [p for p in panels if p.items[0] in codes]

        author = self.staff.pick(rng, LAB_DEPT)
        checker = self.staff.pick(rng, LAB_DEPT)
        blood = first.specimen != "尿液"
        determiner = rng.choice(("LACF", "RACF")) if blood and rng.random() < 0.6 else None
        row.update(
            last_update_dtime=t_update,
            class_code=first.code,
            class_name=first.name,
            class_local_name=first.local_name,
            report_title="+".join(p.title for p in panels),
            effective_dtime=fmt_dt(t_author),
            author_id=author.id,
            author_dtime=fmt_dt(t_author),
            author_name=author.name,
            authenticator_id=checker.id,
            authenticator_dtime=fmt_dt(t_auth),
            authenticator_name=checker.name,
            participant_dtime=fmt_dt(t_part),
            specimen_id=f"{self.day:%y%m%d}{i:05d}",
            specimen_class_code=first.specimen,
            specimen_determiner_code=determiner,
            specimen_determiner_name=_DETERMINER[determiner] if determiner else None,
            performer_dept_code=LAB_DEPT.code,
            performer_dept_name=LAB_DEPT.name,
            performer_dept_std_code=first.dept_std_code,
            performer_dept_std_name=spec.dictionary("STD_DEPT").codes[first.dept_std_code],
            performer_doctor=author.name,
            performer_dtime=fmt_dt(t_perf),
            playing_device=first.device,
        )
        sick = 2.0 if rng.random() < 0.15 else 1.0
        serial0 = rng.randrange(10_000_000, 99_000_000)
        items, lines = [], []
        for j, code in enumerate(codes):
            a = catalog.ANALYTES[code]
            value, interp = _lab_value(rng, a, sick)
            eff = t_auth - timedelta(seconds=rng.randint(0, 90))
            items.append(
                {
                    "last_update_dtime": t_update,
                    "org_code": self.org,
                    "event_no": row["event_no"],
                    "report_form_no": row["report_form_no"],
                    "serial_no": str(serial0 + j),
                    "class_code": a.code,
                    "class_name": a.name,
                    "class_local_name": a.local_name,
                    "result_type": a.result_type,
                    "result_type_descr": _OBS_TYPE[a.result_type],
                    "result_value": value,
                    "result_unit": a.unit,
                    "norm_lower_limit": None if a.lo is None else f"{a.lo:.{a.decimals}f}",
                    "norm_upper_limit": None if a.hi is None else f"{a.hi:.{a.decimals}f}",
                    "norm_value_notes": "阴性" if a.cd_values is catalog.NEGATIVE else None,
                    "result_interpre": interp,
                    "result_interpre_descr": _INTERPRET[interp],
                    "effective_dtime": fmt_dt(eff),
                    "examine_way": a.method,
                    "recognition": a.recognition,
                }
            )
            shown = value if a.result_type == "PQ" else _INTERPRET_ASCII[interp]
            lines.append(f"{j + 1:>2}  {a.code:<8} {a.abbr:<8} {shown:>10} {a.unit or '':<9} {interp}")
        if with_pdf:
            row["pdf"] = self.pdf_for(f"Laboratory report {row['report_form_no']}", row, lines)
        else:
            row["pdf"] = None
        recognized = tuple(it["class_code"] for it in items if it["recognition"] == "1")
        return Report("lab", i, row, items, recognized=recognized)

    # -- exam ------------------------------------------------------------------------------
    def exam_report(self, i: int, *, auth: datetime | None = None, with_pdf: bool = True) -> Report:
        rng = self.rng("exam", i)
        row, pat, _ = self._common(rng, "exam", i)
        modality = rng.choices(_MODALITIES, _MODALITY_W)[0]
        if modality == "MG" and pat.sex_code != "2":
            modality = "DR"
        choices = [e for e in catalog.EXAM_ITEMS if e.modality == modality]
        lo, hi = self.exam_items
        exams = rng.sample(choices, min(len(choices), rng.randint(lo, hi)))
        t_auth = auth or self.at(rng.uniform(8 * 3600, 23 * 3600))
        t_author = t_auth - timedelta(seconds=rng.randint(30, 900))
        t_perf = max(t_author - timedelta(seconds=rng.randint(600, 3 * 3600)), self.at(300))
        t_arrive = max(t_perf - timedelta(seconds=rng.randint(300, 3600)), self.at(120))
        t_part = max(t_arrive - timedelta(seconds=rng.randint(300, 3 * 3600)), self.at(30))
        t_update = t_auth + timedelta(seconds=rng.randint(0, 120))
        dept = IMAGING_DEPTS[modality]
        author, checker, tech = (self.staff.pick(rng, dept) for _ in range(3))
        abnormal = [rng.random() < 0.35 for _ in exams]
        descr, concl, diags = [], [], []
        for e, ab in zip(exams, abnormal, strict=True):
            f = catalog.FINDINGS[e.site_code]
            d, c = f.abnormal if ab else f.normal
            descr.append(d)
            concl.append(c)
            diags.append(rng.choice(f.diagnoses))
        uid = f"2.25.{rng.getrandbits(128)}"
        pacs_id = f"{modality}{self.day:%y%m%d}{i:06d}"
        row.update(
            last_update_dtime=t_update,
            state="3",
            performer_dtime=fmt_dt(t_perf),
            pacs_id=pacs_id,
            study_instance_uid=uid,
            checked_status="1",
            class_code=modality,
            class_name=_MODALITY[modality],
            report_title="+".join(e.name for e in exams),
            effective_dtime=fmt_dt(t_author),
            confidentiality=None,
            birth_date=f"{pat.birth_date:%Y-%m-%d}",
            author_id=author.id,
            author_dtime=fmt_dt(t_author),
            author_name=author.name,
            authenticator_id=checker.id,
            authenticator_dtime=fmt_dt(t_auth),
            authenticator_name=checker.name,
            authenticator_dept_code=dept.code,
            authenticator_dept_name=dept.name,
            authenticator_dept_std_code=dept.std_code,
            authenticator_dept_std_name=dept.std_name,
            participant_dtime=fmt_dt(t_part),
            performer_dept_code=dept.code,
            performer_dept_name=dept.name,
            performer_dept_std_code=dept.std_code,
            performer_dept_std_name=dept.std_name,
            performer_doctor=tech.name,
            playing_device=catalog.DEVICES[modality],
            outpat_diag_name=";".join(dict.fromkeys(diags)),
            patient_condition_desc=rng.choice(catalog.CONDITIONS),
            exam_purpose=rng.choice(("明确诊断", "复查", None)),
            image_descr="".join(descr),
            is_abnormal="0" if any(abnormal) else "1",
            conclusion="；".join(f"{k + 1}. {c.rstrip('。')}" for k, c in enumerate(concl)) + "。"
            if len(concl) > 1
            else concl[0],
            arrive_dtime=fmt_dt(t_arrive),
            pacs_url=f"http://pacs.h{self.org}.local/viewer?StudyInstanceUID={uid}",
        )
        items = [
            {
                "last_update_dtime": t_update,
                "org_code": self.org,
                "event_no": row["event_no"],
                "report_form_no": row["report_form_no"],
                "exam_site_code": e.site_code,
                "body_part_name": e.body_part,
                "exam_item_code": e.code,
                "exam_item_name": e.name,
                "effective_dtime": fmt_dt(t_auth - timedelta(seconds=rng.randint(0, 60))),
                "recognition": e.recognition,
            }
            for e in exams
        ]
        study, instances = self._pacs(rng, row, pat, modality, t_perf)
        if with_pdf:
            lines = [f"Modality {modality}   Accession {pacs_id}", f"Study UID {uid}", ""]
            lines += [
                f"Item {e.code}  site {e.site_code}  {'ABNORMAL' if ab else 'normal'}"
                for e, ab in zip(exams, abnormal, strict=True)
            ]
            row["pdf"] = self.pdf_for(f"Imaging report {row['report_form_no']}", row, lines)
        else:
            row["pdf"] = None
        recognized = tuple(it["exam_item_code"] for it in items if it["recognition"] == "1")
        return Report("exam", i, row, items, study, instances, recognized)

    def _pacs(
        self, rng: random.Random, row: Row, pat: Patient, modality: str, t_perf: datetime
    ) -> tuple[Row, list[Row]]:
        (s_lo, s_hi), size = catalog.PACS_SHAPE[modality]
        n = max(1, self.pacs_instances)
        n_series = min(n, rng.randint(s_lo, s_hi))
        series_uids = [f"2.25.{rng.getrandbits(128)}" for _ in range(n_series)]
        per_series = [n // n_series + (1 if s < n % n_series else 0) for s in range(n_series)]
        uid, study_time = row["study_instance_uid"], row["performer_dtime"]
        t0 = t_perf + timedelta(seconds=rng.randint(60, 600))
        common = {
            "PATIENTNAME": pat.name,
            "PATIENTAGE": f"{pat.age_on(self.day):03d}Y",
            "PATIENTSEX": pat.sex_code,
            "ACCESS_NO": row["pacs_id"],
            "PATIENT_ID": pat.patient_id,
            "MODALITY": modality,
            "INSTITUTIONNAME": self.hospital.name,
            "INSTITUTIONCODE": self.org,
        }
        instances: list[Row] = []
        k = 0
        for s, (suid, count) in enumerate(zip(series_uids, per_series, strict=True)):
            for inst in range(count):
                sop = f"2.25.{rng.getrandbits(128)}"
                instances.append(
                    {
                        "FILEPATH": f"/pacs/{self.org}/{self.day:%Y/%m/%d}/{uid}/{suid}/{sop}.dcm",
                        "CREATEDTIME": t0 + timedelta(seconds=k // 4),
                        "STUDIUIID": uid,
                        "STUDYDATE": study_time,
                        "SERIESIUID": suid,
                        "SERIESNO": str(s + 1),
                        "INSTANCESOPIUID": sop,
                        "INSTANCEINSTNO": str(inst + 1),
                        **common,
                        "FILESIZE": str(int(size * rng.uniform(0.9, 1.1))),
                    }
                )
                k += 1
        study = {
            "PATIENT_ID": pat.patient_id,
            "PATIENTNAME": pat.name,
            "MODALITY": modality,
            "ACCESS_NO": row["pacs_id"],
            "STUDIUIID": uid,
            "STUDYTIME": study_time,
            "MODIFYTIME": max(r["CREATEDTIME"] for r in instances),
            "INSTITUTIONNAME": self.hospital.name,
            "INSTITUTIONCODE": self.org,
            "FILESIZE": str(sum(int(r["FILESIZE"]) for r in instances)),
            "INSTANCECOUNT": str(len(instances)),
        }
        return study, instances

    # -- accept / quote records ---------------------------------------------------------------
    def records(self, kind: Literal["accept", "quote"], n: int, peers: list[HospitalDay]) -> list[Row]:
        """``n`` records of doctors here about recognized items of the peers' reports (fewer if
        the peers have too few recognized items)."""
        if not peers or n <= 0:
            return []
        cache: dict[tuple[str, str, int], Report] = {}
        used: set[tuple[str, str, str]] = set()
        out: list[Row] = []
        for j in range(n):
            rng = self.rng(kind, j)
            for _ in range(50):
                peer = rng.choice(peers)
                total = peer.lab_reports + peer.exam_reports
                if total == 0:
                    continue
                rkind: ReportKind = "lab" if rng.random() < peer.lab_reports / total else "exam"
                idx = rng.randrange(peer.lab_reports if rkind == "lab" else peer.exam_reports)
                ck = (peer.org, rkind, idx)
                if ck not in cache:
                    make = peer.lab_report if rkind == "lab" else peer.exam_report
                    cache[ck] = make(idx, with_pdf=False)
                rep = cache[ck]
                free = [c for c in rep.recognized if (peer.org, rep.master["report_form_no"], c) not in used]
                if free:
                    break
            else:
                continue
            code = rng.choice(free)
            used.add((peer.org, rep.master["report_form_no"], code))
            out.append(self._record(rng, kind, j, peer, rep, code))
        return out

    def _record(
        self, rng: random.Random, kind: str, j: int, peer: HospitalDay, rep: Report, code: str
    ) -> Row:
        new_type = "1" if rng.random() < 0.8 else "2"
        dept = rng.choice(_CLINICS if new_type == "1" else _WARDS)
        doc = self.staff.pick(rng, dept)
        ref_auth = datetime.strptime(rep.master["authenticator_dtime"], spec.DATETIME_FORMAT)
        lo, hi = ref_auth + timedelta(seconds=300), self.at(86_399)
        t = lo + timedelta(seconds=rng.randint(0, int((hi - lo).total_seconds()))) if lo < hi else hi
        row: Row = {
            "new_event_no": f"{new_type}{self.day:%y%m%d}8{j:05d}",
            "new_event_type": new_type,
            "hr_org_code": peer.org,
            "hr_report_form_no": rep.master["report_form_no"],
            "code": code,
            "id_no": rep.master["id_no"],
            "id_type_code": rep.master["id_type_code"],
        }
        if kind == "accept":
            accept = "1" if rng.random() < 0.7 else "2"
            row["is_accept"] = accept
            row["reason"] = (
                rng.choice(tuple(spec.dictionary("STD_REJECT_REASON").codes)) if accept == "2" else None
            )
        row.update(
            record_time=t,
            type="2" if rep.kind == "lab" else "1",
            dept_code=dept.code,
            dept_name=dept.name,
            dept_std_code=dept.std_code,
            dept_std_name=dept.std_name,
            doc_code=doc.id,
            doc_name=doc.name,
        )
        return row


_INTERPRET_ASCII = {"N": "normal", "H": "high", "L": "low", "WP": "weak pos", "P": "positive"}


def _lab_value(rng: random.Random, a: catalog.Analyte, sick: float) -> tuple[str, str]:
    if a.cd_values:
        value, interp, _ = rng.choices(a.cd_values, tuple(w for *_, w in a.cd_values))[0]
        return value, interp
    assert a.lo is not None and a.hi is not None
    mid, sd = (a.lo + a.hi) / 2, (a.hi - a.lo) / 4 * sick
    v = round(abs(rng.gauss(mid, sd)), a.decimals)
    interp = "L" if v < a.lo else "H" if v > a.hi else "N"
    return f"{v:.{a.decimals}f}", interp
