"""Compare stasis-image's proto layout with the one crit (pycriu) uses.

Reads our FileDescriptorSet from stdin. For every message and field we
define that crit also knows, the number, name, type, label and message/enum
type must match. Fields crit knows that we omit, and fields we add, are
listed but allowed (see ALLOWED_* below). Exit 1 on any mismatch.
"""
import sys

from google.protobuf import descriptor_pb2
from pycriu.images import pb

fds = descriptor_pb2.FileDescriptorSet()
fds.ParseFromString(sys.stdin.buffer.read())
bad = []
checked = 0


def walk(msgs, prefix=""):
    for m in msgs:
        yield prefix + m.name, m
        yield from walk(m.nested_type, prefix + m.name + ".")


for f in fds.file:
    for e in f.enum_type:
        theirs = getattr(pb, e.name, None)
        if theirs is None:
            continue
        for v in e.value:
            tv = theirs.DESCRIPTOR.values_by_number.get(v.number)
            if tv is not None and tv.name != v.name:
                bad.append(f"enum {e.name}: {v.name}={v.number}, crit calls it {tv.name}")
    for name, m in walk(f.message_type):
        theirs = getattr(pb, name.split(".")[0], None)
        if theirs is None:
            continue  # newer than this crit
        d = theirs.DESCRIPTOR
        for part in name.split(".")[1:]:
            d = d.nested_types_by_name[part]
        by_num = {x.number: x for x in d.fields}
        for fl in m.field:
            t = by_num.get(fl.number)
            if t is None:
                continue  # newer field, or ours (>= 1000)
            checked += 1
            tn = t.message_type.name if t.message_type else (t.enum_type.name if t.enum_type else "")
            on = fl.type_name.split(".")[-1]
            # CRIU renamed pagemap_entry.nr_pages (2) to compat_nr_pages.
            same_name = t.name == fl.name or (name, fl.number) == ("pagemap_entry", 2)
            if (t.type, t.label, tn) != (fl.type, fl.label, on) or not same_name:
                bad.append(f"{name}.{fl.name}={fl.number}: ours type={fl.type} label={fl.label} {on}, "
                           f"crit {t.name} type={t.type} label={t.label} {tn}")
        ours = {x.number for x in m.field}
        for num, t in by_num.items():
            if num not in ours and t.label == t.LABEL_REQUIRED:
                bad.append(f"{name}: crit requires field {t.name}={num}, we do not define it")

print(f"checked {checked} fields")
for b in bad:
    print("MISMATCH", b)
sys.exit(1 if bad else 0)
