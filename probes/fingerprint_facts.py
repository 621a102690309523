"""The built-in fingerprints: published facts of censors' DNS answers, block pages,
block-page hosts and their look-alikes (:mod:`probes.fingerprints` compiles them).

Every entry is a single published fact, with its source in a comment (OONI's
blocking-fingerprints, Censored Planet's signatures, vendors' documentation;
docs/fingerprints.md gives each one's country, source and date). The patterns are
written here (shorter, case-insensitive); no file is copied.
"""

from __future__ import annotations

import re


def _lit(text: str) -> str:
    """A literal text as a pattern (OONI's ``contains`` rows)."""
    return re.escape(text)


# --- built-in facts ----------------------------------------------------------

#: DNS answers injected by national filters: (address, who injects it).
_DNS_INJECTED: tuple[tuple[str, str], ...] = (
    # Iran's national filter answers blocked names with its block-page servers
    # (OONI ooni.ir_4, ooni.ir_5; Censored Planet nat_ir_national_1..3; the AAAA
    # answer d0::11 is the IPv6 counterpart used in Iran's block-page iframes).
    ("10.10.34.34", "Iran national filter"),
    ("10.10.34.35", "Iran national filter"),
    ("10.10.34.36", "Iran national filter"),
    ("d0::11", "Iran national filter"),
    # China's Great Firewall poison answers (OONI ooni.cn_0 .. ooni.cn_9).
    ("8.7.198.45", "China Great Firewall"),
    ("37.61.54.158", "China Great Firewall"),
    ("46.82.174.68", "China Great Firewall"),
    ("59.24.3.173", "China Great Firewall"),
    ("78.16.49.15", "China Great Firewall"),
    ("93.46.8.89", "China Great Firewall"),
    ("159.106.121.75", "China Great Firewall"),
    ("203.98.7.65", "China Great Firewall"),
    ("243.185.187.39", "China Great Firewall"),
    # Turkey: a poisoned reply used nationally since 2014 (OONI ooni.tr_6).
    ("195.175.254.2", "Turkey national filter"),
    # Russia: national block-page answers (OONI ooni.ru_97, ooni.ru_98).
    ("62.33.207.196", "Russia national filter"),
    ("62.33.207.197", "Russia national filter"),
    # Thailand: Ministry of Digital Economy block answer (OONI ooni.th_9).
    ("125.26.170.3", "Thailand national filter"),
    # Malaysia: "violates the National law(s)" answer (OONI ooni.my_2).
    ("175.139.142.25", "Malaysia national filter"),
    # Myanmar: Ministry of Transport and Communications answer (OONI ooni.mm_3).
    ("167.172.4.60", "Myanmar national filter"),
    # Mongolia: legal-block answer (OONI ooni.mn_0).
    ("218.100.84.78", "Mongolia national filter"),
)

# Where a signature looks: the page (the title and the whole body received, of the
# final response and of every redirect hop), the title alone, the Server header, a
# redirect target (Location headers and redirect hops, the whole URL), any header by
# name, or the host of a redirect target (a known block-page host or address).
_BODY, _TITLE, _SERVER, _LOCATION, _HEADER = "body", "title", "server", "location", "header"
#: a fingerprint file's ``full`` / ``prefix`` body row: matched at the start of the body
_BODY_START = "body_start"
#: the page's own start: its title and its first PAGE_HEAD_CHARS characters. For a
#: signature that is a mere mention of a filter's domain: a block page names it at once
#: (an injected page is small), while a long ordinary page may quote or link it (an
#: article on filtering), which the whole body would make a false block page.
_PAGE_HEAD = "page_head"
PAGE_HEAD_CHARS = 8192

#: (where, name, regex) of block pages and censor announcements. Case-insensitive.
_BLOCK_SIGNATURES: tuple[tuple[str, str, str], ...] = (
    # Iran: the block page is an iframe to the national block server, by IPv4
    # or by its IPv6 address written in full (Censored Planet nat_ir_national_*;
    # OONI's Iran HTTP fingerprints), and it names peyvandha.ir / internet.ir.
    (
        _BODY,
        "Iran national filter block page",
        r"""(?:src|href)\s*=\s*["']?https?://10\.10\.34\.3[456]\b""",
    ),
    (
        _BODY,
        "Iran national filter block page",
        r"""(?:src|href)\s*=\s*["']?https?://\[d0(?::0){6}:11(?::80)?\]""",
    ),
    (_PAGE_HEAD, "Iran national filter block page", r"\bpeyvandha\.ir\b"),
    (_PAGE_HEAD, "Iran national filter block page", r"\binternet\.ir\b"),
    (
        _LOCATION,
        "redirect to Iran's national block page",
        r"^https?://(?:10\.10\.34\.3[456]|\[d0(?::0){6}:11(?::80)?\]|\[d0::11\])",
    ),
    (_LOCATION, "redirect to Iran's national block page", r"^https?://(?:www\.)?peyvandha\.ir\b"),
    # Commercial filters that announce themselves.
    # OONI ooni.ae_0 / ooni.sa_1: Server header prefix, seen in AE and SA.
    (_SERVER, "WireFilter censor header", r"^Protected by WireFilter"),
    # OONI ooni.zz_2; Censored Planet prod_barracuda_2.
    (_SERVER, "Barracuda firewall header", r"^Barracuda/NGFirewall"),
    # OONI ooni.fr_2: the Olfeo filtering gateway names itself in Server.
    (_SERVER, "Olfeo web filter header", r"^Olfeo"),
    # Censored Planet prod_fortinet_1.
    (_BODY, "FortiGuard web filter block page", r"FortiGuard Web Filtering"),
    # Censored Planet prod_sonicwall_2.
    (_BODY, "SonicWALL block page", r"SonicWALL - Web Site Blocked"),
    # Censored Planet prod_watchguard_1.
    (_BODY, "WatchGuard block page", r"Request denied by WatchGuard HTTP Proxy"),
    # Censored Planet prod_mcafee_1.
    (_BODY, "McAfee Web Gateway block page", r"McAfee Web Gateway - Notification - Blocked"),
    # Netsweeper deny pages are framed from /webadmin/deny/ (OONI ooni.ye_0,
    # Censored Planet isp_kw_zain).
    (_BODY, "Netsweeper block page", r"/webadmin/deny/"),
    # National block pages (Censored Planet nat_kr_comm, nat_sa_national_2,
    # nat_id_kominfo, nat_pak_isp_common_blockpage, nat_bh_national,
    # isp_ru_generalbp10 links the RKN registry).
    (_PAGE_HEAD, "South Korea national block page", r"\bwarning\.or\.kr\b"),
    (_BODY, "Saudi Arabia national block page", r"\binternet\.gov\.sa\b"),
    (_BODY, "Indonesia TrustPositif block page", r"\btrustpositif\.kominfo\.go\.id\b"),
    (_BODY, "Pakistan block page", r"prohibited for viewership from within Pakistan"),
    (_BODY, "Bahrain national block page", r"\bwww\.anonymous\.com\.bh\b"),
    (_BODY, "Russia RKN block page", r"\bblocklist\.rkn\.gov\.ru\b"),
    # Redirects to block pages (OONI header.location rows: ooni.ae_1,
    # ooni.by_3 / ooni.ru_80, ooni.uz_0, ooni.id_0).
    (
        _LOCATION,
        "redirect to a Blue Coat block notice",
        r"^http://www\.bluecoat\.com/notify-NotifyUser1",
    ),
    (_LOCATION, "redirect to an RKN block stub", r"^https://vk\.com/blank\.php\?rkn="),
    (_LOCATION, "redirect to Uzbekistan's block registry", r"^http://reestr\.mitc\.uz/"),
    (_LOCATION, "redirect to Indonesia's Internet Positif", r"^http://internet-positif\.org"),
    # --- brought up to date (docs/fingerprints.md: country, source, date of each) ---
    # Indonesia: the Komdigi TrustPositif block page of 2025 (OONI measurement of
    # archive.org, AS23693, 2025-05-27) and OONI's older Internet Positif rows.
    (
        _BODY,
        "Indonesia TrustPositif block page",
        r"AKSES KE SITUS INI DIBLOKIR OLEH PEMERINTAH INDONESIA",
    ),
    (_BODY, "Indonesia TrustPositif block page", _lit("http://block.uzone.id")),  # ooni.id_3
    (_BODY, "Indonesia TrustPositif block page", _lit(".uzone.id/assets/internetpositif")),
    (
        _BODY,
        "Indonesia block page",  # ooni.id_7
        _lit("tidak bisa diakses melalui jaringan ini sesuai peraturan perundang-undangan"),
    ),
    # Russia: the RKN registry link and the federal-law wording of ISP block pages
    # (ooni.ru_5, ooni.ru_0, ooni.ru_4).
    (_BODY, "Russia RKN block page", _lit("http://eais.rkn.gov.ru/")),
    (
        _BODY,
        "Russia RKN block page",
        _lit("Доступ к сайту ограничен в соответствии с Федеральными законами"),  # noqa: RUF001
    ),
    (
        _BODY,
        "Russia RKN block page",
        _lit("<h1>Доступ к запрашиваемому ресурсу закрыт."),  # noqa: RUF001
    ),
    # Turkey: the national block page (ooni.tr_0, ooni.tr_2).
    (
        _BODY,
        "Turkey national block page",
        _lit("<title>Telekomünikasyon İletişim Başkanlığı"),  # noqa: RUF001
    ),
    (
        _BODY,
        "Turkey national block page",
        _lit("administration measure has been taken for this website"),
    ),
    # Ukraine (ooni.ua_0), Thailand (ooni.th_0), Colombia (ooni.co_0), Belgium (ooni.be_0).
    (
        _BODY,
        "Ukraine national block page",
        _lit("Відвідування даного ресурсу заборонено"),  # noqa: RUF001
    ),
    (
        _BODY,
        "Thailand national block page",
        _lit("Access to this website has been disabled because the Ministry of Digital Econom"),
    ),
    (
        _BODY,
        "Colombia national block page",
        _lit("Esta página ha sido bloqueada por disposición del Ministerio de las TIC"),
    ),
    (
        _BODY,
        "Belgium national block page",
        _lit("that is considered illegal according to Belgian legislation"),
    ),
    # Redirects by URL (OONI header.location rows: ooni.ru_6, ooni.ru_25, ooni.kr_2).
    (
        _LOCATION,
        "redirect to a Rostelecom RKN block page",
        r"^https?://(?:warning|block)\.rt\.ru\b",
    ),
)

#: (host or address, name) of block-page servers: a redirect whose Location (or a
#: later hop) goes to one of them is blocking, and lifeline stops there rather than
#: connect to it. A name also covers its subdomains; an address only itself.
_BLOCK_HOSTS: tuple[tuple[str, str], ...] = (
    # Indonesia: the Komdigi block page "Trustpositif" (OONI measurement of
    # archive.org from AS23693, 2025-05-27: a 302 to it) and OONI ooni.id_1, ooni.id_2.
    ("lamanlabuh.aduankonten.id", "redirect to Indonesia's TrustPositif block page"),
    ("internetpositif.uzone.id", "redirect to Indonesia's Internet Positif"),
    ("mercusuar.uzone.id", "redirect to Indonesia's Internet Positif"),
    ("internet-positif.org", "redirect to Indonesia's Internet Positif"),
    # Russia: an ISP's RKN block page on a bare address (OONI measurement of rutor.org
    # from AS42668, 2020-03-03, confirmed by OONI) and OONI ooni.ru_19, ooni.ru_27, ooni.ru_81.
    ("89.223.47.135", "redirect to a Russian ISP's RKN block page"),
    ("62.112.121.68", "redirect to a Russian ISP's RKN block page"),
    ("217.169.82.130", "redirect to a Russian ISP's RKN block page"),
    ("95.213.254.253", "redirect to a Russian ISP's RKN block page"),
    ("warning.rt.ru", "redirect to a Rostelecom RKN block page"),
    # Iran's national block servers (OONI ooni.ir_0, Censored Planet nat_ir_national_*).
    ("10.10.34.34", "redirect to Iran's national block page"),
    ("10.10.34.35", "redirect to Iran's national block page"),
    ("10.10.34.36", "redirect to Iran's national block page"),
    ("d0::11", "redirect to Iran's national block page"),
    ("peyvandha.ir", "redirect to Iran's national block page"),
    # Thailand: the national block page's addresses (OONI ooni.th_1, ooni.th_2).
    ("103.86.50.16", "redirect to Thailand's national block page"),
    ("103.208.24.21", "redirect to Thailand's national block page"),
    # Belarus (ooni.by_1), South Korea (ooni.kr_2), Uzbekistan (ooni.uz_0).
    ("82.209.230.23", "redirect to a Belarusian ISP's block page"),
    ("warning.or.kr", "redirect to South Korea's national block page"),
    ("reestr.mitc.uz", "redirect to Uzbekistan's block registry"),
)

#: (where, name, regex) of pages that look like blocking but are not censorship.
_FALSE_POSITIVES: tuple[tuple[str, str, str], ...] = (
    # Cloudflare's browser challenge and its WAF pages: the site's own
    # protection, not a censor (Censored Planet x_cloudflare_check,
    # x_cloudflare_error_1; Cloudflare documents the cf-mitigated header and
    # the "Just a moment..." title of challenge pages).
    (_BODY, "Cloudflare challenge", r"Checking your browser before accessing"),
    (_BODY, "Cloudflare challenge", r"<title>\s*Just a moment\.\.\.\s*</title>"),
    (_TITLE, "Cloudflare challenge", r"^Just a moment\.\.\.$"),
    (_BODY, "Cloudflare error page", r"Cloudflare Ray ID|Attention Required! \| Cloudflare"),
    (_HEADER + ":cf-mitigated", "Cloudflare challenge", r"^challenge"),
    # A stock nginx error page (Censored Planet x_fpru_nginx and the nginx
    # default 403 body): a server refusing, not a censor announcing itself.
    (_BODY, "generic nginx 403", r"<h1>403 Forbidden</h1>\s*</center>\s*<hr>\s*<center>\s*nginx"),
    (_BODY, "nginx default page", r"Thank you for using nginx\."),
    # Varnish and S3 errors (Censored Planet x_varnish_error, s3_deny_2).
    (_BODY, "Varnish error page", r"Guru Meditation:"),
    (_BODY, "Amazon S3 access denied", r"<Error>\s*<Code>AccessDenied</Code>"),
    # The site's own geo-block (Censored Planet x_fpru_serverside).
    (
        _BODY,
        "server-side geo-block",
        r"It appears you are accessing our website from a prohibited location",
    ),
    # Hosting placeholders (Censored Planet x_fpru_heroku, squarespace_domain_claim).
    (_BODY, "Heroku no-such-app page", r"herokucdn\.com/error-pages/no-such-app"),
    (_BODY, "Squarespace unclaimed domain", r"Domain Not Claimed"),
)

_CONFIGURED_DNS = "listed in the config's fingerprints"
