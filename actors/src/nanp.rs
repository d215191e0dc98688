//! The North American Numbering Plan area codes the service knows, each with the state or
//! province it serves and the IANA time zone covering most of it. Owns the table and the lookup;
//! choosing between the phone's region and the location's is left to [`crate::compliance`].
//!
//! The table ships with the code, as a sorted static slice searched by binary search, so a lookup
//! allocates nothing. Area codes that span two zones map to the zone where most of their
//! subscribers live (Florida's 850 to Central, Indiana's 812 to Eastern). Non-geographic codes
//! (toll-free 8xx, 900, the 5xx personal-communication codes, the fictional 555) are absent.

const EASTERN: &str = "America/New_York";
const CENTRAL: &str = "America/Chicago";
const MOUNTAIN: &str = "America/Denver";
const PACIFIC: &str = "America/Los_Angeles";

/// Says where an area code is: its state and the time zone its recipients most likely live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AreaCodeRegion {
    /// Two-letter code of the US state, DC, a US territory ("PR") or a Canadian province ("ON").
    pub state: &'static str,
    /// IANA name of the zone covering most of the area code, e.g. "America/Chicago".
    pub time_zone: &'static str,
}

/// Returns the region an area code serves, or `None` for codes that are non-geographic,
/// unassigned or unknown to this table.
pub fn area_code_region(area_code: u16) -> Option<AreaCodeRegion> {
    let index = AREA_CODES.binary_search_by_key(&area_code, |entry| entry.area_code).ok()?;
    Some(AREA_CODES[index].region)
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
struct AreaCodeEntry {
    area_code: u16,
    region: AreaCodeRegion,
}

const fn region(area_code: u16, state: &'static str, time_zone: &'static str) -> AreaCodeEntry {
    AreaCodeEntry { area_code, region: AreaCodeRegion { state, time_zone } }
}

/// Sorted by area code, without duplicates (a unit test checks both).
static AREA_CODES: &[AreaCodeEntry] = &[
    region(201, "NJ", EASTERN),
    region(202, "DC", EASTERN),
    region(203, "CT", EASTERN),
    region(204, "MB", "America/Winnipeg"),
    region(205, "AL", CENTRAL),
    region(206, "WA", PACIFIC),
    region(207, "ME", EASTERN),
    region(208, "ID", "America/Boise"),
    region(209, "CA", PACIFIC),
    region(210, "TX", CENTRAL),
    region(212, "NY", EASTERN),
    region(213, "CA", PACIFIC),
    region(214, "TX", CENTRAL),
    region(215, "PA", EASTERN),
    region(216, "OH", EASTERN),
    region(217, "IL", CENTRAL),
    region(218, "MN", CENTRAL),
    region(219, "IN", CENTRAL),
    region(220, "OH", EASTERN),
    region(223, "PA", EASTERN),
    region(224, "IL", CENTRAL),
    region(225, "LA", CENTRAL),
    region(226, "ON", "America/Toronto"),
    region(227, "MD", EASTERN),
    region(228, "MS", CENTRAL),
    region(229, "GA", EASTERN),
    region(231, "MI", "America/Detroit"),
    region(234, "OH", EASTERN),
    region(235, "MO", CENTRAL),
    region(236, "BC", "America/Vancouver"),
    region(239, "FL", EASTERN),
    region(240, "MD", EASTERN),
    region(248, "MI", "America/Detroit"),
    region(249, "ON", "America/Toronto"),
    region(250, "BC", "America/Vancouver"),
    region(251, "AL", CENTRAL),
    region(252, "NC", EASTERN),
    region(253, "WA", PACIFIC),
    region(254, "TX", CENTRAL),
    region(256, "AL", CENTRAL),
    region(257, "BC", "America/Vancouver"),
    region(260, "IN", "America/Indiana/Indianapolis"),
    region(262, "WI", CENTRAL),
    region(263, "QC", "America/Toronto"),
    region(267, "PA", EASTERN),
    region(269, "MI", "America/Detroit"),
    region(270, "KY", CENTRAL),
    region(272, "PA", EASTERN),
    region(274, "WI", CENTRAL),
    region(276, "VA", EASTERN),
    region(279, "CA", PACIFIC),
    region(281, "TX", CENTRAL),
    region(283, "OH", EASTERN),
    region(289, "ON", "America/Toronto"),
    region(301, "MD", EASTERN),
    region(302, "DE", EASTERN),
    region(303, "CO", MOUNTAIN),
    region(304, "WV", EASTERN),
    region(305, "FL", EASTERN),
    region(306, "SK", "America/Regina"),
    region(307, "WY", MOUNTAIN),
    region(308, "NE", CENTRAL),
    region(309, "IL", CENTRAL),
    region(310, "CA", PACIFIC),
    region(312, "IL", CENTRAL),
    region(313, "MI", "America/Detroit"),
    region(314, "MO", CENTRAL),
    region(315, "NY", EASTERN),
    region(316, "KS", CENTRAL),
    region(317, "IN", "America/Indiana/Indianapolis"),
    region(318, "LA", CENTRAL),
    region(319, "IA", CENTRAL),
    region(320, "MN", CENTRAL),
    region(321, "FL", EASTERN),
    region(323, "CA", PACIFIC),
    region(324, "FL", EASTERN),
    region(325, "TX", CENTRAL),
    region(326, "OH", EASTERN),
    region(327, "AR", CENTRAL),
    region(330, "OH", EASTERN),
    region(331, "IL", CENTRAL),
    region(332, "NY", EASTERN),
    region(334, "AL", CENTRAL),
    region(336, "NC", EASTERN),
    region(337, "LA", CENTRAL),
    region(339, "MA", EASTERN),
    region(340, "VI", "America/St_Thomas"),
    region(341, "CA", PACIFIC),
    region(343, "ON", "America/Toronto"),
    region(346, "TX", CENTRAL),
    region(347, "NY", EASTERN),
    region(350, "CA", PACIFIC),
    region(351, "MA", EASTERN),
    region(352, "FL", EASTERN),
    region(353, "WI", CENTRAL),
    region(354, "QC", "America/Toronto"),
    region(360, "WA", PACIFIC),
    region(361, "TX", CENTRAL),
    region(363, "NY", EASTERN),
    region(364, "KY", CENTRAL),
    region(365, "ON", "America/Toronto"),
    region(367, "QC", "America/Toronto"),
    region(368, "AB", "America/Edmonton"),
    region(380, "OH", EASTERN),
    region(382, "ON", "America/Toronto"),
    region(385, "UT", MOUNTAIN),
    region(386, "FL", EASTERN),
    region(401, "RI", EASTERN),
    region(402, "NE", CENTRAL),
    region(403, "AB", "America/Edmonton"),
    region(404, "GA", EASTERN),
    region(405, "OK", CENTRAL),
    region(406, "MT", MOUNTAIN),
    region(407, "FL", EASTERN),
    region(408, "CA", PACIFIC),
    region(409, "TX", CENTRAL),
    region(410, "MD", EASTERN),
    region(412, "PA", EASTERN),
    region(413, "MA", EASTERN),
    region(414, "WI", CENTRAL),
    region(415, "CA", PACIFIC),
    region(416, "ON", "America/Toronto"),
    region(417, "MO", CENTRAL),
    region(418, "QC", "America/Toronto"),
    region(419, "OH", EASTERN),
    region(423, "TN", EASTERN),
    region(424, "CA", PACIFIC),
    region(425, "WA", PACIFIC),
    region(428, "NB", "America/Moncton"),
    region(430, "TX", CENTRAL),
    region(431, "MB", "America/Winnipeg"),
    region(432, "TX", CENTRAL),
    region(434, "VA", EASTERN),
    region(435, "UT", MOUNTAIN),
    region(436, "OH", EASTERN),
    region(437, "ON", "America/Toronto"),
    region(438, "QC", "America/Toronto"),
    region(440, "OH", EASTERN),
    region(442, "CA", PACIFIC),
    region(443, "MD", EASTERN),
    region(445, "PA", EASTERN),
    region(447, "IL", CENTRAL),
    region(448, "FL", CENTRAL),
    region(450, "QC", "America/Toronto"),
    region(458, "OR", PACIFIC),
    region(463, "IN", "America/Indiana/Indianapolis"),
    region(464, "IL", CENTRAL),
    region(468, "QC", "America/Toronto"),
    region(469, "TX", CENTRAL),
    region(470, "GA", EASTERN),
    region(474, "SK", "America/Regina"),
    region(475, "CT", EASTERN),
    region(478, "GA", EASTERN),
    region(479, "AR", CENTRAL),
    region(480, "AZ", "America/Phoenix"),
    region(484, "PA", EASTERN),
    region(501, "AR", CENTRAL),
    region(502, "KY", EASTERN),
    region(503, "OR", PACIFIC),
    region(504, "LA", CENTRAL),
    region(505, "NM", MOUNTAIN),
    region(506, "NB", "America/Moncton"),
    region(507, "MN", CENTRAL),
    region(508, "MA", EASTERN),
    region(509, "WA", PACIFIC),
    region(510, "CA", PACIFIC),
    region(512, "TX", CENTRAL),
    region(513, "OH", EASTERN),
    region(514, "QC", "America/Toronto"),
    region(515, "IA", CENTRAL),
    region(516, "NY", EASTERN),
    region(517, "MI", "America/Detroit"),
    region(518, "NY", EASTERN),
    region(519, "ON", "America/Toronto"),
    region(520, "AZ", "America/Phoenix"),
    region(530, "CA", PACIFIC),
    region(531, "NE", CENTRAL),
    region(534, "WI", CENTRAL),
    region(539, "OK", CENTRAL),
    region(540, "VA", EASTERN),
    region(541, "OR", PACIFIC),
    region(548, "ON", "America/Toronto"),
    region(551, "NJ", EASTERN),
    region(557, "MO", CENTRAL),
    region(559, "CA", PACIFIC),
    region(561, "FL", EASTERN),
    region(562, "CA", PACIFIC),
    region(563, "IA", CENTRAL),
    region(564, "WA", PACIFIC),
    region(567, "OH", EASTERN),
    region(570, "PA", EASTERN),
    region(571, "VA", EASTERN),
    region(572, "OK", CENTRAL),
    region(573, "MO", CENTRAL),
    region(574, "IN", "America/Indiana/Indianapolis"),
    region(575, "NM", MOUNTAIN),
    region(579, "QC", "America/Toronto"),
    region(580, "OK", CENTRAL),
    region(581, "QC", "America/Toronto"),
    region(584, "MB", "America/Winnipeg"),
    region(585, "NY", EASTERN),
    region(586, "MI", "America/Detroit"),
    region(587, "AB", "America/Edmonton"),
    region(601, "MS", CENTRAL),
    region(602, "AZ", "America/Phoenix"),
    region(603, "NH", EASTERN),
    region(604, "BC", "America/Vancouver"),
    region(605, "SD", CENTRAL),
    region(606, "KY", EASTERN),
    region(607, "NY", EASTERN),
    region(608, "WI", CENTRAL),
    region(609, "NJ", EASTERN),
    region(610, "PA", EASTERN),
    region(612, "MN", CENTRAL),
    region(613, "ON", "America/Toronto"),
    region(614, "OH", EASTERN),
    region(615, "TN", CENTRAL),
    region(616, "MI", "America/Detroit"),
    region(617, "MA", EASTERN),
    region(618, "IL", CENTRAL),
    region(619, "CA", PACIFIC),
    region(620, "KS", CENTRAL),
    region(623, "AZ", "America/Phoenix"),
    region(626, "CA", PACIFIC),
    region(628, "CA", PACIFIC),
    region(629, "TN", CENTRAL),
    region(630, "IL", CENTRAL),
    region(631, "NY", EASTERN),
    region(636, "MO", CENTRAL),
    region(639, "SK", "America/Regina"),
    region(640, "NJ", EASTERN),
    region(641, "IA", CENTRAL),
    region(645, "FL", EASTERN),
    region(646, "NY", EASTERN),
    region(647, "ON", "America/Toronto"),
    region(650, "CA", PACIFIC),
    region(651, "MN", CENTRAL),
    region(656, "FL", EASTERN),
    region(657, "CA", PACIFIC),
    region(659, "AL", CENTRAL),
    region(660, "MO", CENTRAL),
    region(661, "CA", PACIFIC),
    region(662, "MS", CENTRAL),
    region(667, "MD", EASTERN),
    region(669, "CA", PACIFIC),
    region(670, "MP", "Pacific/Saipan"),
    region(671, "GU", "Pacific/Guam"),
    region(672, "BC", "America/Vancouver"),
    region(678, "GA", EASTERN),
    region(679, "MI", "America/Detroit"),
    region(680, "NY", EASTERN),
    region(681, "WV", EASTERN),
    region(682, "TX", CENTRAL),
    region(683, "ON", "America/Toronto"),
    region(684, "AS", "Pacific/Pago_Pago"),
    region(689, "FL", EASTERN),
    region(701, "ND", CENTRAL),
    region(702, "NV", PACIFIC),
    region(703, "VA", EASTERN),
    region(704, "NC", EASTERN),
    region(705, "ON", "America/Toronto"),
    region(706, "GA", EASTERN),
    region(707, "CA", PACIFIC),
    region(708, "IL", CENTRAL),
    region(709, "NL", "America/St_Johns"),
    region(712, "IA", CENTRAL),
    region(713, "TX", CENTRAL),
    region(714, "CA", PACIFIC),
    region(715, "WI", CENTRAL),
    region(716, "NY", EASTERN),
    region(717, "PA", EASTERN),
    region(718, "NY", EASTERN),
    region(719, "CO", MOUNTAIN),
    region(720, "CO", MOUNTAIN),
    region(724, "PA", EASTERN),
    region(725, "NV", PACIFIC),
    region(726, "TX", CENTRAL),
    region(727, "FL", EASTERN),
    region(730, "IL", CENTRAL),
    region(731, "TN", CENTRAL),
    region(732, "NJ", EASTERN),
    region(734, "MI", "America/Detroit"),
    region(737, "TX", CENTRAL),
    region(740, "OH", EASTERN),
    region(742, "ON", "America/Toronto"),
    region(743, "NC", EASTERN),
    region(747, "CA", PACIFIC),
    region(753, "ON", "America/Toronto"),
    region(754, "FL", EASTERN),
    region(757, "VA", EASTERN),
    region(760, "CA", PACIFIC),
    region(762, "GA", EASTERN),
    region(763, "MN", CENTRAL),
    region(765, "IN", "America/Indiana/Indianapolis"),
    region(769, "MS", CENTRAL),
    region(770, "GA", EASTERN),
    region(771, "DC", EASTERN),
    region(772, "FL", EASTERN),
    region(773, "IL", CENTRAL),
    region(774, "MA", EASTERN),
    region(775, "NV", PACIFIC),
    region(778, "BC", "America/Vancouver"),
    region(779, "IL", CENTRAL),
    region(780, "AB", "America/Edmonton"),
    region(781, "MA", EASTERN),
    region(782, "NS", "America/Halifax"),
    region(785, "KS", CENTRAL),
    region(786, "FL", EASTERN),
    region(787, "PR", "America/Puerto_Rico"),
    region(801, "UT", MOUNTAIN),
    region(802, "VT", EASTERN),
    region(803, "SC", EASTERN),
    region(804, "VA", EASTERN),
    region(805, "CA", PACIFIC),
    region(806, "TX", CENTRAL),
    region(807, "ON", "America/Toronto"),
    region(808, "HI", "Pacific/Honolulu"),
    region(810, "MI", "America/Detroit"),
    region(812, "IN", "America/Indiana/Indianapolis"),
    region(813, "FL", EASTERN),
    region(814, "PA", EASTERN),
    region(815, "IL", CENTRAL),
    region(816, "MO", CENTRAL),
    region(817, "TX", CENTRAL),
    region(818, "CA", PACIFIC),
    region(819, "QC", "America/Toronto"),
    region(820, "CA", PACIFIC),
    region(825, "AB", "America/Edmonton"),
    region(826, "VA", EASTERN),
    region(828, "NC", EASTERN),
    region(830, "TX", CENTRAL),
    region(831, "CA", PACIFIC),
    region(832, "TX", CENTRAL),
    region(835, "PA", EASTERN),
    region(838, "NY", EASTERN),
    region(839, "SC", EASTERN),
    region(840, "CA", PACIFIC),
    region(843, "SC", EASTERN),
    region(845, "NY", EASTERN),
    region(847, "IL", CENTRAL),
    region(848, "NJ", EASTERN),
    region(850, "FL", CENTRAL),
    region(854, "SC", EASTERN),
    region(856, "NJ", EASTERN),
    region(857, "MA", EASTERN),
    region(858, "CA", PACIFIC),
    region(859, "KY", EASTERN),
    region(860, "CT", EASTERN),
    region(862, "NJ", EASTERN),
    region(863, "FL", EASTERN),
    region(864, "SC", EASTERN),
    region(865, "TN", EASTERN),
    region(867, "YT", "America/Whitehorse"),
    region(870, "AR", CENTRAL),
    region(872, "IL", CENTRAL),
    region(873, "QC", "America/Toronto"),
    region(878, "PA", EASTERN),
    region(879, "NL", "America/St_Johns"),
    region(901, "TN", CENTRAL),
    region(902, "NS", "America/Halifax"),
    region(903, "TX", CENTRAL),
    region(904, "FL", EASTERN),
    region(905, "ON", "America/Toronto"),
    region(906, "MI", "America/Detroit"),
    region(907, "AK", "America/Anchorage"),
    region(908, "NJ", EASTERN),
    region(909, "CA", PACIFIC),
    region(910, "NC", EASTERN),
    region(912, "GA", EASTERN),
    region(913, "KS", CENTRAL),
    region(914, "NY", EASTERN),
    region(915, "TX", MOUNTAIN),
    region(916, "CA", PACIFIC),
    region(917, "NY", EASTERN),
    region(918, "OK", CENTRAL),
    region(919, "NC", EASTERN),
    region(920, "WI", CENTRAL),
    region(925, "CA", PACIFIC),
    region(928, "AZ", "America/Phoenix"),
    region(929, "NY", EASTERN),
    region(930, "IN", "America/Indiana/Indianapolis"),
    region(931, "TN", CENTRAL),
    region(934, "NY", EASTERN),
    region(936, "TX", CENTRAL),
    region(937, "OH", EASTERN),
    region(938, "AL", CENTRAL),
    region(939, "PR", "America/Puerto_Rico"),
    region(940, "TX", CENTRAL),
    region(941, "FL", EASTERN),
    region(942, "ON", "America/Toronto"),
    region(943, "GA", EASTERN),
    region(945, "TX", CENTRAL),
    region(947, "MI", "America/Detroit"),
    region(948, "VA", EASTERN),
    region(949, "CA", PACIFIC),
    region(951, "CA", PACIFIC),
    region(952, "MN", CENTRAL),
    region(954, "FL", EASTERN),
    region(956, "TX", CENTRAL),
    region(959, "CT", EASTERN),
    region(970, "CO", MOUNTAIN),
    region(971, "OR", PACIFIC),
    region(972, "TX", CENTRAL),
    region(973, "NJ", EASTERN),
    region(975, "MO", CENTRAL),
    region(978, "MA", EASTERN),
    region(979, "TX", CENTRAL),
    region(980, "NC", EASTERN),
    region(983, "CO", MOUNTAIN),
    region(984, "NC", EASTERN),
    region(985, "LA", CENTRAL),
    region(986, "ID", "America/Boise"),
    region(989, "MI", "America/Detroit"),
];

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;

    use super::*;

    fn zone_of(area_code: u16) -> Option<&'static str> {
        area_code_region(area_code).map(|r| r.time_zone)
    }

    #[test]
    fn known_area_codes_map_to_their_state_and_zone() {
        let cases = [
            (212, "NY", EASTERN),
            (305, "FL", EASTERN),
            (404, "GA", EASTERN),
            (850, "FL", CENTRAL),
            (312, "IL", CENTRAL),
            (214, "TX", CENTRAL),
            (915, "TX", MOUNTAIN),
            (303, "CO", MOUNTAIN),
            (602, "AZ", "America/Phoenix"),
            (213, "CA", PACIFIC),
            (206, "WA", PACIFIC),
            (907, "AK", "America/Anchorage"),
            (808, "HI", "Pacific/Honolulu"),
            (787, "PR", "America/Puerto_Rico"),
            (939, "PR", "America/Puerto_Rico"),
            (317, "IN", "America/Indiana/Indianapolis"),
            (313, "MI", "America/Detroit"),
            (208, "ID", "America/Boise"),
            (202, "DC", EASTERN),
            (416, "ON", "America/Toronto"),
            (604, "BC", "America/Vancouver"),
            (306, "SK", "America/Regina"),
            (709, "NL", "America/St_Johns"),
        ];
        for (area_code, state, time_zone) in cases {
            assert_eq!(area_code_region(area_code), Some(AreaCodeRegion { state, time_zone }), "{area_code}");
        }
    }

    #[test]
    fn every_arizona_area_code_is_in_phoenix_time() {
        for area_code in [480, 520, 602, 623, 928] {
            assert_eq!(zone_of(area_code), Some("America/Phoenix"), "{area_code}");
        }
    }

    #[test]
    fn non_geographic_area_codes_have_no_region() {
        for area_code in [500, 521, 533, 544, 555, 566, 577, 588, 600, 700, 800, 833, 844, 855, 866, 877, 888, 900] {
            assert_eq!(area_code_region(area_code), None, "{area_code}");
        }
    }

    #[test]
    fn out_of_range_area_codes_have_no_region() {
        for area_code in [0, 1, 99, 199, 1000, u16::MAX] {
            assert_eq!(area_code_region(area_code), None, "{area_code}");
        }
    }

    #[test]
    fn every_entry_names_a_zone_the_database_knows() {
        for entry in AREA_CODES {
            let zone = entry.region.time_zone;
            assert!(TimeZone::get(zone).is_ok(), "{}: unknown zone {zone}", entry.area_code);
        }
    }

    #[test]
    fn every_entry_has_a_two_letter_uppercase_state_and_a_three_digit_code() {
        for entry in AREA_CODES {
            let state = entry.region.state;
            assert!(state.len() == 2 && state.bytes().all(|b| b.is_ascii_uppercase()), "{}", entry.area_code);
            assert!((200..=999).contains(&entry.area_code), "{}", entry.area_code);
        }
    }

    #[test]
    fn the_table_is_sorted_without_duplicates() {
        for pair in AREA_CODES.windows(2) {
            assert!(pair[0].area_code < pair[1].area_code, "{} then {}", pair[0].area_code, pair[1].area_code);
        }
    }

    #[test]
    fn the_table_covers_a_plausible_number_of_area_codes() {
        assert!(AREA_CODES.len() > 300, "only {} area codes", AREA_CODES.len());
    }

    #[test]
    fn every_state_and_dc_and_puerto_rico_has_an_area_code() {
        let expected = [
            "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS", "KY",
            "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH",
            "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "PR",
        ];
        for state in expected {
            assert!(AREA_CODES.iter().any(|e| e.region.state == state), "{state} has no area code");
        }
    }
}
