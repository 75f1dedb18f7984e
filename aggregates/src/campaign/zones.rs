//! The callee's possible time zones, from the number alone: the country, and the area code
//! where a country spans several zones (US, CA, BR, AU, MX, …). When the area code is unknown
//! every zone of the country is a candidate, so a window check over all of them fails closed;
//! an unknown country gives no zone at all and the number is never dialled.

use chrono_tz::Tz;

use crate::common::E164;

const US_ALL: &[Tz] = &[
    Tz::America__New_York,
    Tz::America__Chicago,
    Tz::America__Denver,
    Tz::America__Phoenix,
    Tz::America__Los_Angeles,
    Tz::America__Anchorage,
    Tz::Pacific__Honolulu,
];

const US_PACIFIC: &[u16] = &[
    206, 209, 213, 253, 279, 310, 323, 341, 350, 360, 408, 415, 424, 425, 442, 458, 503, 509, 510,
    530, 541, 559, 562, 564, 619, 626, 628, 650, 657, 661, 669, 702, 707, 714, 725, 747, 760, 775,
    805, 818, 820, 831, 840, 858, 909, 916, 925, 949, 951, 971,
];
const US_MOUNTAIN: &[u16] = &[
    303, 307, 385, 406, 435, 505, 575, 719, 720, 801, 915, 970, 983, 986,
];
const US_ARIZONA: &[u16] = &[480, 520, 602, 623, 928];
const US_CENTRAL: &[u16] = &[
    205, 210, 214, 217, 218, 224, 225, 228, 251, 254, 256, 262, 281, 309, 312, 314, 316, 318, 319,
    320, 334, 337, 346, 361, 402, 405, 409, 414, 417, 430, 432, 469, 479, 501, 504, 507, 512, 515,
    531, 534, 539, 563, 573, 580, 601, 608, 612, 615, 618, 620, 630, 636, 641, 651, 660, 662, 682,
    708, 712, 713, 715, 726, 731, 737, 763, 769, 773, 779, 785, 806, 815, 816, 817, 830, 832, 847,
    870, 872, 901, 903, 913, 918, 920, 931, 936, 940, 952, 956, 972, 979, 985,
];
const US_EASTERN: &[u16] = &[
    201, 202, 203, 207, 212, 215, 216, 220, 223, 229, 231, 234, 239, 240, 248, 267, 269, 276, 301,
    302, 304, 305, 313, 315, 321, 330, 332, 336, 339, 347, 351, 352, 380, 386, 401, 404, 407, 410,
    412, 413, 419, 423, 434, 440, 443, 445, 470, 475, 478, 484, 508, 513, 516, 517, 518, 540, 551,
    561, 567, 570, 571, 585, 586, 603, 607, 609, 610, 614, 616, 617, 631, 646, 667, 678, 680, 681,
    703, 704, 706, 716, 717, 718, 724, 727, 732, 734, 740, 754, 757, 762, 772, 774, 781, 786, 802,
    803, 804, 810, 813, 814, 828, 838, 843, 845, 848, 856, 857, 859, 860, 862, 863, 864, 878, 904,
    908, 910, 912, 914, 917, 919, 929, 934, 937, 941, 947, 954, 959, 973, 978, 980, 984, 989,
];

const CA_ALL: &[Tz] = &[
    Tz::America__St_Johns,
    Tz::America__Halifax,
    Tz::America__Toronto,
    Tz::America__Winnipeg,
    Tz::America__Regina,
    Tz::America__Edmonton,
    Tz::America__Vancouver,
    Tz::America__Whitehorse,
];

const BR_ALL: &[Tz] = &[
    Tz::America__Sao_Paulo,
    Tz::America__Manaus,
    Tz::America__Cuiaba,
    Tz::America__Rio_Branco,
    Tz::America__Porto_Velho,
    Tz::America__Boa_Vista,
    Tz::America__Noronha,
];

const AU_ALL: &[Tz] = &[
    Tz::Australia__Sydney,
    Tz::Australia__Melbourne,
    Tz::Australia__Brisbane,
    Tz::Australia__Adelaide,
    Tz::Australia__Darwin,
    Tz::Australia__Perth,
    Tz::Australia__Hobart,
];

const MX_ALL: &[Tz] = &[
    Tz::America__Mexico_City,
    Tz::America__Cancun,
    Tz::America__Chihuahua,
    Tz::America__Hermosillo,
    Tz::America__Mazatlan,
    Tz::America__Tijuana,
];

/// Countries in one zone (ISO 3166 code → zone).
const SINGLE: &[(&str, Tz)] = &[
    ("GB", Tz::Europe__London),
    ("IE", Tz::Europe__Dublin),
    ("FR", Tz::Europe__Paris),
    ("DE", Tz::Europe__Berlin),
    ("IT", Tz::Europe__Rome),
    ("NL", Tz::Europe__Amsterdam),
    ("BE", Tz::Europe__Brussels),
    ("CH", Tz::Europe__Zurich),
    ("AT", Tz::Europe__Vienna),
    ("SE", Tz::Europe__Stockholm),
    ("NO", Tz::Europe__Oslo),
    ("DK", Tz::Europe__Copenhagen),
    ("FI", Tz::Europe__Helsinki),
    ("PL", Tz::Europe__Warsaw),
    ("CZ", Tz::Europe__Prague),
    ("GR", Tz::Europe__Athens),
    ("AR", Tz::America__Argentina__Buenos_Aires),
    ("CO", Tz::America__Bogota),
    ("PE", Tz::America__Lima),
    ("UY", Tz::America__Montevideo),
    ("PY", Tz::America__Asuncion),
    ("VE", Tz::America__Caracas),
    ("IN", Tz::Asia__Kolkata),
    ("JP", Tz::Asia__Tokyo),
    ("CN", Tz::Asia__Shanghai),
    ("KR", Tz::Asia__Seoul),
    ("SG", Tz::Asia__Singapore),
    ("HK", Tz::Asia__Hong_Kong),
    ("TW", Tz::Asia__Taipei),
    ("ZA", Tz::Africa__Johannesburg),
    ("NG", Tz::Africa__Lagos),
    ("KE", Tz::Africa__Nairobi),
    ("EG", Tz::Africa__Cairo),
    ("IL", Tz::Asia__Jerusalem),
    ("AE", Tz::Asia__Dubai),
    ("SA", Tz::Asia__Riyadh),
    ("TR", Tz::Europe__Istanbul),
    ("NZ", Tz::Pacific__Auckland),
    ("PH", Tz::Asia__Manila),
    ("TH", Tz::Asia__Bangkok),
    ("VN", Tz::Asia__Ho_Chi_Minh),
    ("MY", Tz::Asia__Kuala_Lumpur),
];

/// The zones the holder of `number` may be in (empty: unknown, never dialled).
pub fn candidate_zones(number: &E164) -> Vec<Tz> {
    let digits = &number.as_str()[1..];
    let Some(region) = number.region() else {
        return vec![];
    };
    let area = |n: usize| digits.get(..n).and_then(|s| s.parse::<u32>().ok());
    match region.as_str() {
        "US" => {
            let Some(a) = digits.get(1..4).and_then(|s| s.parse::<u16>().ok()) else {
                return US_ALL.to_vec();
            };
            let zone = if US_EASTERN.contains(&a) {
                Tz::America__New_York
            } else if US_CENTRAL.contains(&a) {
                Tz::America__Chicago
            } else if US_MOUNTAIN.contains(&a) {
                Tz::America__Denver
            } else if US_ARIZONA.contains(&a) {
                Tz::America__Phoenix
            } else if US_PACIFIC.contains(&a) {
                Tz::America__Los_Angeles
            } else if a == 907 {
                Tz::America__Anchorage
            } else if a == 808 {
                Tz::Pacific__Honolulu
            } else {
                return US_ALL.to_vec();
            };
            vec![zone]
        }
        "CA" => {
            let a = digits
                .get(1..4)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            let z = match a {
                604 | 778 | 236 | 250 | 672 => Tz::America__Vancouver,
                403 | 587 | 780 | 825 | 368 => Tz::America__Edmonton,
                306 | 639 => Tz::America__Regina,
                204 | 431 => Tz::America__Winnipeg,
                416 | 647 | 437 | 905 | 289 | 365 | 613 | 343 | 519 | 226 | 548 | 705 | 249
                | 514 | 438 | 450 | 579 | 418 | 581 | 819 | 873 | 367 => Tz::America__Toronto,
                902 | 782 => Tz::America__Halifax,
                506 => Tz::America__Moncton,
                709 => Tz::America__St_Johns,
                _ => return CA_ALL.to_vec(),
            };
            vec![z]
        }
        "BR" => {
            let ddd = digits.get(2..4).and_then(|s| s.parse::<u16>().ok());
            let z = match ddd {
                Some(65 | 66) => Tz::America__Cuiaba,
                Some(67) => Tz::America__Campo_Grande,
                Some(68) => Tz::America__Rio_Branco,
                Some(69) => Tz::America__Porto_Velho,
                Some(92 | 97) => Tz::America__Manaus,
                Some(95) => Tz::America__Boa_Vista,
                Some(91 | 93 | 94 | 96) => Tz::America__Belem,
                Some(81 | 87) => Tz::America__Recife,
                Some(82) => Tz::America__Maceio,
                Some(85 | 88 | 98 | 99 | 83 | 84 | 86 | 89) => Tz::America__Fortaleza,
                Some(71 | 73 | 74 | 75 | 77 | 79) => Tz::America__Bahia,
                Some(11..=19 | 21..=28 | 31..=38 | 41..=49 | 51..=55 | 61..=64) => {
                    Tz::America__Sao_Paulo
                }
                _ => return BR_ALL.to_vec(),
            };
            vec![z]
        }
        "AU" => match digits.get(2..3) {
            Some("2") => vec![Tz::Australia__Sydney],
            Some("3") => vec![Tz::Australia__Melbourne],
            Some("7") => vec![Tz::Australia__Brisbane],
            Some("8") => vec![
                Tz::Australia__Adelaide,
                Tz::Australia__Perth,
                Tz::Australia__Darwin,
            ],
            _ => AU_ALL.to_vec(),
        },
        "MX" => MX_ALL.to_vec(),
        "ES" => match area(5) {
            Some(34822 | 34828 | 34922 | 34928) => vec![Tz::Atlantic__Canary],
            _ => vec![Tz::Europe__Madrid],
        },
        "PT" => match area(6) {
            Some(351292 | 351295 | 351296) => vec![Tz::Atlantic__Azores],
            _ => vec![Tz::Europe__Lisbon],
        },
        "CL" => vec![Tz::America__Santiago],
        r => SINGLE
            .iter()
            .find(|(c, _)| *c == r)
            .map(|(_, z)| vec![*z])
            .unwrap_or_default(),
    }
}
