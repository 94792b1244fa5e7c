"""FHIR XML <-> FHIR JSON (http://hl7.org/fhir/R4/xml.html), driven by the R4 type model.

The XML side needs the model for three things JSON does not say: which elements repeat
(arrays), the element order (XML follows definition order), and the primitive type of each
value (numbers and booleans become JSON numbers and booleans).
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from fhirlake.fhir import structure
from fhirlake.fhir.structure import ElementDef

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_F = "{" + FHIR_NS + "}"
_F_LEN = len(_F)
_XHTML_DIV = "{" + XHTML_NS + "}div"
MAX_XML_DEPTH = 128  # well above real resources (nested Questionnaire items), far below stack limits

_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})


class XmlFormatError(ValueError):
    """Malformed XML, or XML that is not a FHIR R4 resource."""


def _parser() -> etree.XMLParser:
    # No entity expansion, no DTD, no network, no huge trees: closes XXE and "billion laughs".
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False, remove_comments=False, remove_pis=True, remove_blank_text=False,
    )


def _kind(type_code: str) -> str:
    t = structure.get_type(type_code)
    return t.kind if t else ""


# ---------------------------------------------------------------- XML -> JSON


def xml_to_resource(data: bytes | str) -> dict:
    """Parse one FHIR XML resource into its JSON form (a dict)."""
    if isinstance(data, str):
        data = data.encode("utf-8")  # lxml refuses str input that carries an encoding declaration
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise XmlFormatError(f"malformed XML: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype:
        raise XmlFormatError("DOCTYPE declarations are not allowed in FHIR XML")
    return _read_resource(root, 0)


def _local_fhir_name(el: Any) -> str:
    tag = el.tag
    if not isinstance(tag, str) or not tag.startswith(_F):
        raise XmlFormatError(f"element {tag!r} is not in the FHIR namespace {FHIR_NS}")
    return tag[_F_LEN:]


def _read_resource(el: Any, depth: int) -> dict:
    rtype = _local_fhir_name(el)
    if not structure.is_resource_type(rtype):
        raise XmlFormatError(f"unknown resource type {rtype!r}")
    for attr in el.attrib:
        if attr.startswith("{"):
            continue  # xsi:schemaLocation and similar are allowed on the root
        raise XmlFormatError(f"unexpected attribute {attr!r} on {rtype}")
    out: dict[str, Any] = {"resourceType": rtype}
    _read_children(el, rtype, out, depth + 1, rtype)
    return out


def _read_children(el: Any, parent: str, out: dict[str, Any], depth: int, where: str) -> None:
    if depth > MAX_XML_DEPTH:
        raise XmlFormatError(f"nesting deeper than {MAX_XML_DEPTH} levels at {where}")
    keys = structure.json_keys(parent)
    if el.text and el.text.strip():
        raise XmlFormatError(f"text content is not allowed in {where}")
    only_extended: set[str] = set()
    for child in el:
        if child.tail and child.tail.strip():
            raise XmlFormatError(f"text content is not allowed in {where}")
        if not isinstance(child.tag, str):
            continue  # comments are allowed anywhere in FHIR XML
        name = "div" if child.tag == _XHTML_DIV else _local_fhir_name(child)
        hit = keys.get(name)
        if hit is None:
            raise XmlFormatError(f"unknown element {name!r} in {where}")
        element, type_code = hit
        if element.xml_attribute:
            raise XmlFormatError(f"{name!r} must be an attribute in {where}")
        path = f"{where}.{name}"
        kind = _kind(type_code)
        if element.is_inline:
            value: Any = _read_complex(child, element.structure_path, depth, path)
        elif kind == structure.PRIMITIVE_KIND:
            _read_primitive(child, element, name, type_code, out, depth, path)
            if element.is_array:
                only_extended.add(name)
            continue
        elif kind == structure.RESOURCE_KIND:
            value = _read_contained(child, depth, path)
        else:
            value = _read_complex(child, type_code, depth, path)
        if element.is_array:
            out.setdefault(name, []).append(value)
        elif name in out:
            raise XmlFormatError(f"{path} repeats but allows at most one value")
        else:
            out[name] = value
    for name in only_extended:
        # A repeating primitive whose items all carry only extensions has no value array in JSON.
        values = out.get(name)
        if values is not None and all(v is None for v in values):
            del out[name]


def _read_attributes(el: Any, parent: str, out: dict[str, Any], where: str) -> None:
    keys = structure.json_keys(parent)
    for attr, text in el.attrib.items():
        hit = keys.get(attr)
        if hit is None or not hit[0].xml_attribute:
            raise XmlFormatError(f"unexpected attribute {attr!r} on {where}")
        out[attr] = text


def _read_complex(el: Any, parent: str, depth: int, where: str) -> dict:
    out: dict[str, Any] = {}
    _read_attributes(el, parent, out, where)
    _read_children(el, parent, out, depth + 1, where)
    if not out:
        raise XmlFormatError(f"{where} has no content")
    return out


def _read_contained(el: Any, depth: int, where: str) -> dict:
    inner = [c for c in el if isinstance(c.tag, str)]  # skip comments
    if len(inner) != 1 or el.attrib:
        raise XmlFormatError(f"{where} must hold exactly one resource")
    return _read_resource(inner[0], depth + 1)


def _read_primitive(
    el: Any, element: ElementDef, name: str, type_code: str, out: dict[str, Any], depth: int, where: str
) -> None:
    if type_code == "xhtml":
        if el.tag != _XHTML_DIV:
            raise XmlFormatError(f"{where} must be an XHTML div")
        value: Any = _xhtml_to_string(el)
        extra = None
    else:
        if el.text and el.text.strip():
            raise XmlFormatError(f"{where}: primitive values go in the value attribute")
        value = None
        extra: dict[str, Any] | None = None
        for attr, text in el.attrib.items():
            if attr == "value":
                value = _primitive_from_text(text, type_code, where)
            elif attr == "id":
                extra = {"id": text}
            else:
                raise XmlFormatError(f"unexpected attribute {attr!r} on {where}")
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if child.tag != _F + "extension":
                raise XmlFormatError(f"{where}: only extensions may appear inside a primitive")
            if extra is None:
                extra = {}
            extra.setdefault("extension", []).append(
                _read_complex(child, "Extension", depth + 1, where + ".extension")
            )
        if value is None and extra is None:
            raise XmlFormatError(f"{where} has neither a value nor extensions")
    if element.is_array:
        values = out.setdefault(name, [])
        extras = out.get("_" + name)
        if extra is not None and extras is None:
            extras = out["_" + name] = [None] * len(values)
        values.append(value)
        if extras is not None:
            extras.append(extra)
    else:
        if name in out or "_" + name in out:
            raise XmlFormatError(f"{where} repeats but allows at most one value")
        if value is not None:
            out[name] = value
        if extra is not None:
            out["_" + name] = extra


def _primitive_from_text(text: str, type_code: str, where: str) -> Any:
    if type_code == "boolean":
        if text == "true":
            return True
        if text == "false":
            return False
        raise XmlFormatError(f"{where}: {text!r} is not a boolean")
    if type_code in _INTEGER_TYPES:
        try:
            return int(text)
        except ValueError:
            raise XmlFormatError(f"{where}: {text!r} is not an integer") from None
    if type_code == "decimal":
        try:
            # Keep integers as ints so "100" comes back as 100, not 100.0.
            return int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            raise XmlFormatError(f"{where}: {text!r} is not a decimal") from None
    return text


def _xhtml_to_string(el: Any) -> str:
    # Serialise the div on its own so it carries its own xmlns declaration, as FHIR JSON requires.
    copy = etree.fromstring(etree.tostring(el), _parser())
    copy.tail = None
    etree.cleanup_namespaces(copy)
    return etree.tostring(copy, encoding="unicode", with_tail=False)


# ---------------------------------------------------------------- JSON -> XML


def resource_to_xml(resource: dict, pretty: bool = False) -> bytes:
    """Serialise one FHIR JSON resource (a dict) as FHIR XML."""
    root = _write_resource(resource, None, "")
    if pretty:
        _indent_outside_narratives(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _indent_outside_narratives(root: Any) -> None:
    """Indent the FHIR elements but add no whitespace inside an XHTML narrative (it is content)."""
    placed = []
    for div in list(root.iter(_XHTML_DIV)):
        holder = div.getparent()
        if holder is not None and holder.tag.startswith(_F):
            placed.append((holder, holder.index(div), div))
            holder.remove(div)
    etree.indent(root, space="  ")
    for holder, position, div in placed:
        level = sum(1 for _ in holder.iterancestors())
        inner, outer = "\n" + "  " * (level + 1), "\n" + "  " * level
        holder.insert(position, div)
        if position == 0:
            holder.text = inner
        else:
            holder[position - 1].tail = inner
        div.tail = outer if position == len(holder) - 1 else inner


def _write_resource(resource: Any, holder: Any, where: str) -> Any:
    if not isinstance(resource, dict):
        raise ValueError(f"{where or 'resource'} must be a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not structure.is_resource_type(rtype):
        raise ValueError(f"unknown resourceType {rtype!r} at {where or 'root'}")
    if holder is None:
        el = etree.Element(_F + rtype, nsmap={None: FHIR_NS})
    else:
        el = etree.SubElement(holder, _F + rtype)
    _write_children(el, resource, rtype, where or rtype)
    return el


def _ordered_entries(obj: dict, parent: str, where: str) -> list[tuple[ElementDef, str, str]]:
    """(element, json name, type code) for every member of `obj`, in definition order."""
    keys = structure.json_keys(parent)
    entries: list[tuple[int, str, ElementDef, str]] = []
    for key in obj:
        if key == "resourceType":
            continue
        name = key[1:] if key[0] == "_" else key
        if key[0] == "_" and name in obj:
            continue  # written together with its value
        hit = keys.get(name)
        if hit is None:
            raise ValueError(f"unknown element {key!r} in {where}")
        entries.append((hit[0].order, name, hit[0], hit[1]))
    entries.sort(key=lambda e: e[0])
    return [(e[2], e[1], e[3]) for e in entries]


def _write_children(el: Any, obj: dict, parent: str, where: str) -> None:
    for element, name, type_code in _ordered_entries(obj, parent, where):
        path = f"{where}.{name}"
        value = obj.get(name)
        if element.xml_attribute:
            el.set(name, _primitive_to_text(value))
            continue
        kind = _kind(type_code)
        if kind == structure.PRIMITIVE_KIND and not element.is_inline:
            _write_primitive(el, name, type_code, value, obj.get("_" + name), element.is_array, path)
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if element.is_inline:
                _write_complex(el, name, item, element.structure_path, path)
            elif kind == structure.RESOURCE_KIND:
                _write_resource(item, etree.SubElement(el, _F + name), path)
            else:
                _write_complex(el, name, item, type_code, path)


def _write_complex(el: Any, name: str, value: Any, parent: str, where: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object")
    child = etree.SubElement(el, _F + name)
    _write_children(child, value, parent, where)


def _write_primitive(
    el: Any, name: str, type_code: str, value: Any, extra: Any, is_array: bool, where: str
) -> None:
    if is_array:
        values = value if isinstance(value, list) else []
        extras = extra if isinstance(extra, list) else []
        count = max(len(values), len(extras))
        pairs = [
            (values[i] if i < len(values) else None, extras[i] if i < len(extras) else None)
            for i in range(count)
        ]
    else:
        pairs = [(value, extra)]
    for item, item_extra in pairs:
        if type_code == "xhtml":
            el.append(_xhtml_from_string(item, where))
            continue
        if item is None and item_extra is None:
            continue
        child = etree.SubElement(el, _F + name)
        if item_extra is not None:
            if not isinstance(item_extra, dict):
                raise ValueError(f"{where}: _{name} must hold objects")
            if "id" in item_extra:
                child.set("id", _primitive_to_text(item_extra["id"]))
        if item is not None:
            child.set("value", _primitive_to_text(item))
        if item_extra:
            for ext in item_extra.get("extension", ()):
                _write_complex(child, "extension", ext, "Extension", where + ".extension")


def _primitive_to_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise ValueError(f"not a primitive value: {value!r}")


def _xhtml_from_string(text: Any, where: str) -> Any:
    if not isinstance(text, str):
        raise ValueError(f"{where} must be an XHTML string")
    try:
        div = etree.fromstring(text.encode("utf-8"), _parser())
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"{where}: malformed XHTML: {exc}") from None
    if div.tag != _XHTML_DIV:
        raise ValueError(f"{where} must be an XHTML div")
    return div
