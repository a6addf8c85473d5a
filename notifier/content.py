"""The words notices are made of, per language: data-class labels, likely devices per threat,
threat spellings, date formats. Data, kept apart from the rendering code so that content reviews
(by the operator's communications team) touch one file."""

from __future__ import annotations

# What a leaked field is called in a notice. Keys are the feed's data-class codes.
DATA_CLASS_LABELS: dict[str, dict[str, str]] = {
    "vi": {
        "password": "mật khẩu",
        "address": "địa chỉ",
        "national_id": "số CCCD/CMND",
        "dob": "ngày sinh",
        "bank": "thông tin tài khoản ngân hàng",
        "email": "địa chỉ e-mail",
        "phone": "số điện thoại",
        "msisdn": "số điện thoại",
        "name": "họ tên",
        "full_name": "họ tên",
    },
    "en": {
        "password": "password",
        "address": "address",
        "national_id": "national ID number",
        "dob": "date of birth",
        "bank": "bank account details",
        "email": "e-mail address",
        "phone": "phone number",
        "msisdn": "phone number",
        "name": "full name",
        "full_name": "full name",
    },
}

# Which device a threat most likely lives on, keyed by words found in its name or category.
DEVICE_KEYWORDS: dict[str, frozenset[str]] = {
    "android": frozenset(
        {"android", "flubot", "anubis", "cerberus", "sharkbot", "teabot", "godfather",
         "spynote", "gigabud", "goldpickaxe", "goldfactory", "triada", "joker", "brata",
         "ermac", "octo", "xenomorph", "mobile"}
    ),
    "iot": frozenset(
        {"mirai", "gafgyt", "bashlite", "mozi", "hajime", "moobot", "satori", "okiru",
         "masuta", "tsunami", "kaiten", "fbot", "hns", "hideandseek", "darknexus",
         "iot", "router", "camera", "dvr", "nvr", "cpe"}
    ),
    "windows": frozenset(
        {"windows", "win32", "win64", "emotet", "qakbot", "qbot", "conficker", "downadup",
         "sality", "ramnit", "andromeda", "gamarue", "trickbot", "zeus", "zbot", "necurs",
         "dridex", "icedid", "redline", "agenttesla", "lokibot", "formbook"}
    ),
}
DEVICE_HINTS: dict[str, dict[str, str]] = {
    "vi": {
        "android": "điện thoại Android",
        "iot": "bộ định tuyến (modem/router Wi-Fi), camera hoặc thiết bị IoT",
        "windows": "máy tính chạy Windows",
        "default": "máy tính, điện thoại hoặc thiết bị kết nối Internet",
    },
    "en": {
        "android": "an Android phone",
        "iot": "your router (Wi-Fi modem/router), a camera or another IoT device",
        "windows": "a Windows computer",
        "default": "a computer, phone or other Internet-connected device",
    },
}
DEVICE_ORDER = ("android", "iot", "windows")

# The steps an SMS gives, per device kind, at four lengths (each no longer than the one before):
# the renderer drops to a shorter one only when the richer variant does not fit the part budget.
SMS_ADVICE: dict[str, dict[str, dict[str, str]]] = {
    "vi": {
        "iot": {
            "full": "Vui lòng đổi mật khẩu mặc định của modem/camera, cập nhật firmware và khởi động lại thiết bị.",
            "standard": "Đổi mật khẩu modem/camera, cập nhật firmware.",
            "compact": "Đổi mật khẩu modem/camera, cập nhật firmware.",
            "short": "Đổi mật khẩu modem/camera.",
        },
        "windows": {
            "full": "Vui lòng quét mã độc máy tính bằng phần mềm uy tín, cập nhật Windows, không dùng phần mềm bẻ khóa.",
            "standard": "Quét mã độc máy tính, cập nhật Windows.",
            "compact": "Quét mã độc máy tính, cập nhật Windows.",
            "short": "Quét mã độc máy tính.",
        },
        "android": {
            "full": "Vui lòng gỡ ứng dụng lạ không tải từ CH Play, quét mã độc và cập nhật điện thoại.",
            "standard": "Gỡ ứng dụng lạ, quét mã độc điện thoại.",
            "compact": "Gỡ ứng dụng lạ, quét mã độc điện thoại.",
            "short": "Gỡ ứng dụng lạ trên điện thoại.",
        },
        "default": {
            "full": "Vui lòng đổi mật khẩu mặc định của modem/camera, cập nhật phần mềm và quét mã độc máy tính, "
                    "điện thoại.",
            "standard": "Đổi mật khẩu modem/camera, cập nhật phần mềm, quét mã độc.",
            "compact": "Đổi mật khẩu modem/camera, cập nhật phần mềm.",
            "short": "Đổi mật khẩu modem/camera.",
        },
    },
    "en": {
        "iot": {
            "full": "Change the default passwords of your router and cameras, update their firmware and restart them.",
            "standard": "Change router/camera passwords, update firmware.",
            "compact": "Change router/camera passwords, update firmware.",
            "short": "Change router/camera passwords.",
        },
        "windows": {
            "full": "Scan your Windows computer with reputable anti-malware, install updates, avoid cracked software.",
            "standard": "Scan your PC for malware, install Windows updates.",
            "compact": "Scan your PC for malware, install updates.",
            "short": "Scan your PC for malware.",
        },
        "android": {
            "full": "Remove apps you did not get from Google Play, scan your phone for malware and update it.",
            "standard": "Remove unknown apps, scan your phone for malware.",
            "compact": "Remove unknown apps, scan your phone.",
            "short": "Remove unknown apps.",
        },
        "default": {
            "full": "Change the default passwords of your router and cameras, update their software and scan your "
                    "devices for malware.",
            "standard": "Change router/camera passwords, update software, scan for malware.",
            "compact": "Change router/camera passwords, update software.",
            "short": "Change router/camera passwords.",
        },
    },
}

# Most harmful first: a notice that names only a few leaked classes names these.
LEAK_SEVERITY = ("password", "bank", "national_id", "dob", "address", "email", "phone", "msisdn", "name")
OTHER_DATA = {"vi": "thông tin khác", "en": "other details"}

# language -> style -> pattern. "short" drops the year, "compact" every word (for tight SMS).
DATETIME_FORMATS: dict[str, dict[str, str]] = {
    "vi": {"full": "{hm} ngày {d:02d}/{m:02d}/{y}", "short": "{hm} ngày {d:02d}/{m:02d}",
           "compact": "{hm} {d:02d}/{m:02d}"},
    "en": {"full": "{hm} on {d} {mon} {y}", "short": "{hm} on {d} {mon}", "compact": "{hm} {d} {mon}"},
}
MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CONJUNCTIONS = {"vi": "và", "en": "and"}

# How threat families are usually written; feeds often send them in lower case.
KNOWN_THREAT_NAMES = {
    name.lower(): name
    for name in (
        "Mirai", "Mozi", "Gafgyt", "Bashlite", "Hajime", "Moobot", "Satori", "Tsunami", "Fbot", "Emotet",
        "QakBot", "Qbot", "QSnatch", "Conficker", "Sality", "Ramnit", "Andromeda", "Gamarue", "TrickBot",
        "Zeus", "Necurs", "Dridex", "IcedID", "RedLine", "AgentTesla", "FluBot", "Anubis", "Cerberus",
        "SharkBot", "TeaBot", "Godfather", "SpyNote", "Gigabud", "GoldPickaxe", "Triada", "Joker",
    )
}

# language -> style -> pattern for a date known without its time (a leak list's `leaked_at` of
# `2026-11-02`): printing "00:00 ngày 02/11/2026" would claim a time nobody gave.
DATE_FORMATS: dict[str, dict[str, str]] = {
    "vi": {"full": "{d:02d}/{m:02d}/{y}", "short": "{d:02d}/{m:02d}", "compact": "{d:02d}/{m:02d}"},
    "en": {"full": "{d} {mon} {y}", "short": "{d} {mon}", "compact": "{d} {mon}"},
}

# The tail of a list of threats cut short: "Mirai, Mozi và 3 mã độc khác".
MORE_THREATS = {"vi": "{n} mã độc khác", "en": "{n} more"}

# Top-level domains that make a dotted feed label read as a link ("evil.com", "lua-dao.vn"), so
# the label is dropped. Curated, not complete: the common and the most abused ones, without those
# that are also usual parts of malware names ("win", "bot", "gen", "pe").
LINK_SUFFIXES = frozenset(
    """
    com net org info biz edu gov mil int asia mobi name pro tel travel
    xyz top site online club shop store app dev link live click icu buzz fun tech space website
    cloud page vip bid loan work today life world email support help services digital network
    host press news blog zip mov men party review stream download racing date trade science cam
    monster rest bar cyou sbs cfd
    vn cn ru io co me tk ml ga cf gq ly gl to cc tv ws su pw in us uk de fr jp kr br eu la kh th
    sg my id ph hk tw ai gg im is sh ir kp ua by kz
    """.split()
)
