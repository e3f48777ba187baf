// GroupSpec, Config and Connectivity: construction, masks, valid configs, errors.
#include <dydnn/errors.h>
#include <dydnn/nn/connectivity.h>
#include <dydnn/nn/group_spec.h>

#include <catch2/catch.hpp>

using namespace dydnn::nn;
using Catch::Matchers::Contains;

TEST_CASE("GroupSpec splits channels equally, by ratios, or by counts", "[nn][groups]") {
  CHECK(GroupSpec::equal(32, 4).sizes() == std::vector<int64_t>{8, 8, 8, 8});
  CHECK(GroupSpec::equal(10, 4).sizes() == std::vector<int64_t>{3, 3, 2, 2});
  CHECK(GroupSpec::ratios(32, {1, 1, 2, 4}).sizes() == std::vector<int64_t>{4, 4, 8, 16});
  auto s = GroupSpec::counts({2, 6, 8});
  CHECK(s.channels() == 16);
  CHECK(s.offset(2) == 8);
  CHECK(s.channels_in(Config::of({0, 2})) == 10);
  CHECK(s.scaled(49).sizes() == std::vector<int64_t>{98, 294, 392});
}

TEST_CASE("GroupSpec rejects bad splits with messages that name the value", "[nn][groups][errors]") {
  CHECK_THROWS_WITH(GroupSpec::counts({}), Contains("needs at least one group"));
  CHECK_THROWS_WITH(GroupSpec::equal(3, 4), Contains("4 groups for 3 channels") && Contains("groups <= channels"));
  CHECK_THROWS_WITH(GroupSpec::counts({4, 0}), Contains("group 1 has 0 channels"));
  CHECK_THROWS_WITH(GroupSpec::ratios(3, {1, 1, 10}), Contains("leaves group"));
  CHECK_THROWS_WITH(GroupSpec::ratios(8, {1, -1}), Contains("ratio -1"));
  CHECK_THROWS_AS(GroupSpec::equal(8, 4).size(4), dydnn::IndexError);
  CHECK_THROWS_AS(GroupSpec::equal(8, 0), dydnn::ValueError);
}

TEST_CASE("Config parses letters, stars and numbers", "[nn][config]") {
  CHECK(Config::parse("AB", 4) == Config::of({0, 1}));
  CHECK(Config::parse("C*D*", 4) == Config::of({2, 3}));
  CHECK(Config::parse("{0,3}", 4) == Config::of({0, 3}));
  CHECK(Config::of({0, 2}).name() == "AC");
  CHECK(Config::of({0, 2}).to_string() == "{0,2}");
  CHECK(Config::prefix(3).groups() == std::vector<int64_t>{0, 1, 2});
  CHECK_THROWS_WITH(Config::parse("AE", 4), Contains("names group 4") && Contains("valid: 0..3"));
  CHECK_THROWS_WITH(Config::parse("", 4), Contains("names no group"));
  CHECK_THROWS_WITH(Config::parse("A-B", 4), Contains("unexpected character '-'"));
  CHECK_THROWS_AS(Config::of({64}), dydnn::IndexError);
  CHECK_THROWS_AS(Config::prefix(0), dydnn::IndexError);
}

TEST_CASE("Connectivity presets have the masks and configs of design section 2", "[nn][connectivity]") {
  auto inc = Connectivity::incremental(4);
  CHECK(inc.mask_picture() == "#...\n##..\n###.\n####\n");
  CHECK(inc.valid_configs().size() == 4);
  auto pre = Connectivity::prefix(3);
  CHECK(pre.mask_picture() == "###\n###\n###\n");
  CHECK_FALSE(pre.group_is_exact(0));
  CHECK(pre.group_is_exact(2));  // the last group only exists in the full config
  auto ind = Connectivity::independent(3);
  CHECK(ind.mask_picture() == "#..\n.#.\n..#\n");
  CHECK(ind.valid_configs().size() == 7);
  CHECK(ind.is_valid(Config::of({0, 2})));
  for (int64_t j = 0; j < 3; ++j) CHECK(inc.group_is_exact(j));

  auto fluid = Connectivity::fluid({{0, 1}, {2, 3}}, true);
  CHECK(fluid.mask_picture() == "#...\n##..\n###.\n####\n");
  std::vector<std::string> names;
  for (const auto& c : fluid.valid_configs()) names.push_back(c.name());
  CHECK(names == std::vector<std::string>{"A", "AB", "C", "CD", "ABC", "ABCD"});
  CHECK_FALSE(fluid.group_is_exact(2));  // C* alone and C* with cross edges see different inputs
  CHECK(fluid.group_is_exact(0));
  auto late = Connectivity::fluid({{0, 1}, {2, 3}}, false);
  CHECK(late.mask_picture() == "#...\n##..\n..#.\n..##\n");
  for (int64_t j = 0; j < 4; ++j) CHECK(late.group_is_exact(j));
  CHECK(late.context_of(3, Config::prefix(4)) == Config::of({2, 3}));
}

TEST_CASE("Connectivity rejects invalid configs and bad masks", "[nn][connectivity][errors]") {
  auto inc = Connectivity::incremental(4);
  CHECK_THROWS_WITH(inc.check_valid(Config::of({0, 3}), "DynamicConv2d"),
                    Contains("DynamicConv2d: config {0,3} is not valid for connectivity 'incremental'") &&
                        Contains("valid: {0}, {0,1}, {0,1,2}, {0,1,2,3}"));
  CHECK_THROWS_AS(inc.check_valid(Config::of({5}), "x"), dydnn::IndexError);
  CHECK_THROWS_WITH(Connectivity::fluid({{0, 1}, {1, 2}}, true), Contains("group 1 is in more than one island"));
  CHECK_THROWS_WITH(Connectivity::fluid({{0, 1, 2, 3}}, true), Contains("at least 2 islands"));
  CHECK_THROWS_WITH(Connectivity::custom({0b10, 0b11}, {Config::of({0})}), Contains("must read its own input group 0"));
  CHECK_THROWS_WITH(Connectivity::from_name("dense", 4), Contains("unknown preset 'dense'"));
  CHECK_THROWS_WITH(inc.with_configs({Config::of({1})}), Contains("config {1} is not valid"));
  CHECK(inc.with_configs({Config::prefix(4), Config::prefix(2)}).valid_configs().front() == Config::prefix(4));
}
