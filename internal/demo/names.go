package demo

import "strings"

// The word lists below are the only source of the demo's values. Names are
// common given and family names, at least four letters long, that are not
// ordinary English words and do not hide inside one (as "mary" does in
// "summary"), so that a leak test searching logs for them does not trip over
// unrelated text. A few carry an apostrophe or a non-ASCII letter on purpose,
// to exercise quoting and encoding. Streets and cities are made up.

var givenNames = []string{
	"James", "Marisol", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
	"David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
	"Thomas", "Sarah", "Charles", "Karen", "Christopher", "Nancy", "Daniel", "Beatriz",
	"Matthew", "Margaret", "Anthony", "Sandra", "Steven", "Ashley", "Andrew", "Kimberly",
	"Joshua", "Emily", "Kenneth", "Michelle", "Kevin", "Dorothy", "Brian", "Amanda",
	"Timothy", "Melissa", "Ronald", "Deborah", "Jason", "Stephanie", "Jeffrey", "Rebecca",
	"Carlos", "Maria", "José", "Lucia", "Mateo", "Diego", "Priya", "Aisha",
	"Hiroshi", "Olga", "Dmitri", "Fatima", "Ahmed", "Kwame", "Ngozi", "Siobhan",
	"Ingrid", "Lasse", "Chloé", "Mei-Ling",
}

var familyNames = []string{
	"Smith", "Johnson", "Williams", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
	"Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Taylor", "Moore",
	"Jackson", "Thompson", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
	"Walker", "Nguyen", "Torres", "Flores", "Valderrama", "Campbell", "Mitchell", "Carter",
	"Roberts", "Patel", "Kowalski", "Okafor", "Nakamura", "Schmidt", "Novak", "Haddad",
	"Mensah", "Lindqvist", "O'Brien", "Muñoz", "Fitzgerald", "Okonkwo", "Yamamoto", "Petrov",
	"Johansson", "Kaczmarek", "Gallagher", "Delacroix",
}

// givenASCII and familyASCII are the names as they appear in e-mail local
// parts: lower case, ASCII letters and hyphens only.
var (
	givenASCII  = emailParts(givenNames)
	familyASCII = emailParts(familyNames)
)

func emailParts(names []string) []string {
	fold := strings.NewReplacer("é", "e", "ñ", "n", "'", "")
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fold.Replace(strings.ToLower(n))
	}
	return out
}

var streetStems = []string{
	"Quillfeather", "Bramblewick", "Tinderbox", "Larkspur Hollow", "Copperkettle", "Thistledown",
	"Marrowbone", "Wickerbasket", "Foxglove", "Saltmarsh", "Honeycomb", "Pebblebrook",
	"Juniper Gulch", "Lanternlight", "Millwheel", "Oakumber", "Ravenmoor", "Sparrowhawk",
	"Cindertrack", "Glimmerglass", "Puddlejump", "Mossgrove", "Buttonhook", "Teacup",
}

var streetSuffixes = []string{"Lane", "Road", "Avenue", "Way", "Drive", "Court", "Street", "Place"}

var cities = []string{
	"Demoville", "Sampleton", "Fakersfield", "Mockingport", "Placeholder Falls", "Testburg",
	"Exampleton", "Fixture Springs", "Stubbington", "Synthetica", "Dummy Harbor", "Lorem Bay",
}

var states = []string{
	"AL", "AZ", "CA", "CO", "CT", "FL", "GA", "IL", "IN", "KY", "MA", "MD", "MI", "MN",
	"MO", "NC", "NJ", "NV", "NY", "OH", "OR", "PA", "TN", "TX", "UT", "VA", "WA", "WI",
}

// areaCodes are ordinary North American area codes; every phone number built
// from them is in the fictional 555-0100..555-0199 exchange.
var areaCodes = []string{
	"201", "206", "212", "213", "214", "305", "312", "404", "415", "503",
	"512", "602", "617", "702", "713", "720", "801", "808", "907", "917",
}

var emailDomains = []string{"example.com", "example.net", "example.org"}

var plans = []string{
	"Unlimited Premium", "Unlimited Plus", "Unlimited Basic", "Essentials 15GB",
	"Prepaid 5GB", "Family Share", "Business Pro", "Tablet Data 10GB",
}

var devices = []string{
	"Pixel 8", "Pixel 7a", "iPhone 15", "iPhone 14", "iPhone SE", "Galaxy S24",
	"Galaxy A54", "Moto G Power", "OnePlus 12", "Nokia G310", "Hotspot MF-900", "Smartwatch LTE",
}

var bureaus = []string{"Equifax", "Experian", "TransUnion"}
